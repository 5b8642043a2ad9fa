"""What a results file records of the run that wrote it: the git commit only when run from a checkout."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from largemeta import provenance

SRC = Path(provenance.__file__).resolve().parents[1]


def test_git_commit_of_a_checkout_and_none_elsewhere(tmp_path):
    head = subprocess.run(["git", "-C", str(SRC), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # run from a checkout: its commit (+dirty when tracked files differ)
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", provenance.git_commit())
        assert provenance.git_commit().startswith(head.stdout.strip())
    copy = tmp_path / "src"
    shutil.copytree(SRC / "largemeta", copy / "largemeta", ignore=shutil.ignore_patterns("__pycache__"))
    code = "import json; from largemeta import provenance; print(json.dumps(provenance.environment('cpu')))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(copy)},
    )
    env = json.loads(out.stdout)
    assert env["git_commit"] is None and env["device"] == "cpu" and env["argv"] == ["-c"]


def test_the_command_line_is_the_one_the_largemeta_command_ran(monkeypatch):
    from largemeta.cli import main

    monkeypatch.setattr(provenance, "_command_line", None)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert provenance.command_line() == ["largemeta", "--version"]
