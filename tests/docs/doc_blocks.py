"""The code blocks of the documentation marked to run: extraction and execution (shared by the tests).

A fenced ``python`` or ``bash`` block whose previous line is ``<!-- run -->`` (or ``<!-- run: distributed
-->``, for blocks that start several processes) is run, in page order, in a fresh folder: consecutive Python
blocks in one interpreter (a page's later block uses what an earlier one defined), each bash block with
``bash -euo pipefail``. ``largemeta`` and ``python`` are this interpreter's; ``$REPO`` is the checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
_BLOCK = re.compile(r"^<!-- run(?::\s*(\w+))?\s*-->\n```(\w+)[^\n]*\n(.*?)^```\s*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    mark: str  # "" or "distributed"
    line: int


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in _BLOCK.finditer(text):
        lang = m.group(2)
        if lang not in ("python", "bash"):
            raise ValueError(f"{page}:{text.count(chr(10), 0, m.start()) + 1}: a block to run is {lang!r}")
        found.append(Block(lang, m.group(3), m.group(1) or "", text.count("\n", 0, m.start()) + 2))
    return found


def pages() -> list[Path]:
    """Every documentation page holding a block to run."""
    return sorted(p for p in DOCS.rglob("*.md") if blocks(p))


def run_page(page: Path, workdir: Path, timeout: float = 600) -> None:
    """Run ``page``'s blocks in ``workdir``; a failing block raises ``AssertionError`` with its output."""
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "REPO": str(REPO),
    }
    groups: list[list[Block]] = []
    for b in blocks(page):
        if groups and b.lang == "python" == groups[-1][-1].lang:
            groups[-1].append(b)
        else:
            groups.append([b])
    for group in groups:
        first = group[0]
        if first.lang == "python":
            cmd = [sys.executable, "-c", "\n".join(b.code for b in group)]
        else:
            cmd = ["bash", "-euo", "pipefail", "-c", first.code]
        done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
        where = f"{page.relative_to(REPO) if page.is_relative_to(REPO) else page}:{first.line}"
        assert done.returncode == 0, f"{where} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
