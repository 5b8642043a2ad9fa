"""The documentation site in a real browser: it is built strictly (``scripts/docs.sh``), served on loopback,
and headless Chromium renders its index and API pages; the rendered text must carry the real docstrings of
the public names, not an empty shell.

Marked ``browser``; skipped where Debian's ``chromium`` or the docs extra (``pip install -e '.[docs]'``) is
not installed. ``.ci/run`` runs it after building the site.
"""

from __future__ import annotations

import functools
import html
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from doc_blocks import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium"),
    pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="needs the docs extra"),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site, served over HTTP on loopback: yields its base URL."""
    out = tmp_path_factory.mktemp("site")
    docs_sh = str(REPO / "scripts" / "docs.sh")
    env = {**os.environ, "LARGEMETA_PYTHON": sys.executable}
    built = subprocess.run(["bash", docs_sh, str(out)], capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    handler = functools.partial(_Quiet, directory=str(out))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def rendered_text(url: str, tmp_path) -> str:
    """The visible text of the DOM headless Chromium built for ``url`` (scripts and styles dropped)."""
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", out.stdout, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def first_sentence(obj) -> str:
    doc = " ".join(inspect.getdoc(obj).split())
    return re.sub(r"``?|:\w+:", "", doc.split(". ")[0])[:60]


def test_index_renders_with_its_navigation(site, tmp_path):
    text = rendered_text(f"{site}/index.html", tmp_path)
    assert "Continual Trajectory Shifting" in text
    for entry in ("Getting started", "Your own image folder", "Command line", "Config keys", "Python API"):
        assert entry in text


def test_api_page_renders_the_public_docstrings(site, tmp_path):
    import largemeta
    from largemeta import core

    text = rendered_text(f"{site}/reference/api.html", tmp_path)
    shown = (largemeta.ContinualTrajectoryShifting, largemeta.load_phi, core.MetaLearner, core.MetaController)
    for obj in shown:
        assert first_sentence(obj) in text, (obj, first_sentence(obj))
    for name in (*largemeta.__all__, *core.__all__):
        assert name in text
    assert len(text) > 50_000  # every public name, not a shell


def test_cli_and_config_pages_are_generated_from_the_code(site, tmp_path):
    from largemeta.train.config_docs import keys

    cli = rendered_text(f"{site}/reference/cli.html", tmp_path / "cli")
    for command in ("largemeta train", "largemeta evaluate", "largemeta experiment convergence", "--resume"):
        assert command in cli
    config = rendered_text(f"{site}/reference/config.html", tmp_path / "config")
    for key in keys():
        assert key.name in config
