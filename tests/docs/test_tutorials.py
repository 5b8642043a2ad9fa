"""Every documentation block marked to run runs, at the tiny sizes the pages give (see ``doc_blocks.py``)."""

from __future__ import annotations

import pytest
from doc_blocks import REPO, blocks, pages, run_page


def _params():
    out = []
    for page in pages():
        marks = [pytest.mark.distributed] if any(b.mark == "distributed" for b in blocks(page)) else []
        out.append(pytest.param(page, id=str(page.relative_to(REPO / "docs")), marks=marks))
    return out


@pytest.mark.parametrize("page", _params())
def test_page_runs(page, tmp_path):
    run_page(page, tmp_path)


def test_the_tutorials_have_blocks_to_run():
    names = {p.relative_to(REPO / "docs").as_posix() for p in pages()}
    for tutorial in (REPO / "docs" / "tutorials").glob("*.md"):
        assert tutorial.relative_to(REPO / "docs").as_posix() in names, f"{tutorial.name} runs nothing"


def test_a_failing_block_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- run -->\n```bash\nlargemeta train --set nosuchkey=1 --out x\n```\n")
    with pytest.raises(AssertionError, match="exited 2"):
        run_page(page, tmp_path)
