"""One source for the version: ``largemeta._version.__version__`` (re-exported as ``largemeta.__version__``);
the package metadata and ``--version`` read it."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import largemeta

ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = {attr = "largemeta._version.__version__"}' in pyproject
    assert not re.search(r'(?m)^version\s*=\s*"', pyproject)  # no second, literal version
    assert "__version__ = " not in (ROOT / "src" / "largemeta" / "__init__.py").read_text()
    assert importlib.metadata.version("largemeta") == largemeta.__version__  # the installed metadata agrees


def test_cli_prints_the_version():
    out = subprocess.run(
        [sys.executable, "-m", "largemeta", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out == f"largemeta {largemeta.__version__}\n"
