"""The test tiers are real: every marker expression a script runs (scripts/test.sh's tiers,
benchmarks/gpu_checks.sh, .ci/run) and every marker it names selects tests from the paths it names; the
tiers of scripts/test.sh hold every CPU test exactly once; `pytest` alone is the fast tier.

One collection of the whole suite, in a subprocess, gives each test's markers (module ``pytestmark``
included); the expressions are evaluated over them as pytest evaluates ``-m``."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runs import SRC, env

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["scripts/test.sh", "benchmarks/gpu_checks.sh", ".ci/run"]
WORDS = {"and", "or", "not"}

PLUGIN = """
import json, os

def pytest_collection_finish(session):
    with open(os.environ["LARGEMETA_TEST_MARKS"], "w") as f:
        json.dump({i.nodeid: sorted({m.name for m in i.iter_markers()}) for i in session.items}, f)
"""


def names_in(expr: str) -> set[str]:
    """The marker names of a ``-m`` expression."""
    return {w for w in re.findall(r"\w+", expr) if w not in WORDS}


def selects(expr: str, marks: set[str]) -> bool:
    """Whether ``-m expr`` selects a test with ``marks`` (identifiers, and/or/not, parentheses)."""
    tokens = re.findall(r"\(|\)|\w+|\S", expr)
    assert all(re.fullmatch(r"\(|\)|\w+", t) for t in tokens), f"not a marker expression: {expr!r}"
    python = " ".join(t if t in WORDS or t in "()" else repr(t in marks) for t in tokens)
    return bool(eval(python or "True"))  # only True/False, and/or/not and parentheses


def under(nodeid: str, paths: list[str]) -> bool:
    file = nodeid.split("::")[0]
    return any(file == p or file.startswith(p.rstrip("/") + "/") for p in paths)


def tiers() -> dict[str, tuple[str, list[str]]]:
    """scripts/test.sh's tiers: name -> (marker expression, paths)."""
    text = (ROOT / "scripts/test.sh").read_text()
    rows = re.findall(r'^\s*"(\w+)\|([^|"]*)\|([^|"]*)"\s*$', text, flags=re.M)
    return {name: (expr, paths.split()) for name, expr, paths in rows}


def invocations(script: str) -> list[tuple[str, str, list[str]]]:
    """Every ``-m`` a script gives pytest: (where, expression, paths) — a tier of scripts/test.sh, or a
    literal ``pytest`` command line (one whose ``-m`` is a shell variable is scripts/test.sh's tier loop)."""
    found = (
        [(f"{script} tier {n}", e, p) for n, (e, p) in tiers().items()] if script.endswith("test.sh") else []
    )
    for number, line in enumerate((ROOT / script).read_text().splitlines(), 1):
        called = re.search(r"(?:-m\s+pytest|^\s*pytest)(\s.*)?$", line.split(" #")[0])
        if called is None or line.lstrip().startswith("#"):
            continue
        command = re.split(r"\s(?:>|\|\||\||&&|;)", called.group(1) or "")[0]  # up to a redirect or a list
        args = shlex.split(command, comments=True)
        expr = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "-m"), None)
        paths = [a for a in args if not a.startswith("-") and a != expr and (ROOT / a).exists()]
        if expr is not None and not expr.startswith("$"):
            found.append((f"{script}:{number}", expr, paths or ["tests"]))
    return found


@pytest.fixture(scope="module")
def marks(tmp_path_factory) -> dict[str, set[str]]:
    """Every test of the suite (parametrised ids) -> its marker names."""
    folder = tmp_path_factory.mktemp("marks")
    (folder / "collect_marks.py").write_text(PLUGIN)
    out = folder / "marks.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "", "-p", "collect_marks"]
        + ["-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        env={
            **{k: v for k, v in env().items() if k != "PYTEST_ADDOPTS"},
            "PYTHONPATH": os.pathsep.join([str(folder), SRC]),
            "LARGEMETA_TEST_MARKS": str(out),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {k: set(v) for k, v in json.loads(out.read_text()).items()}


def test_the_scripts_name_the_tiers_they_run():
    assert set(tiers()) == {"fast", "slow", "distributed", "network"}
    assert {e for _, e, _ in invocations("benchmarks/gpu_checks.sh")} == {"gpu"}
    assert invocations(".ci/run") == [] and "bash scripts/test.sh" in (ROOT / ".ci/run").read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_expression_and_marker_a_script_names_selects_tests_from_its_paths(marks, script):
    for where, expr, paths in invocations(script):
        assert any(selects(expr, m) for t, m in marks.items() if under(t, paths)), f"{where}: -m {expr!r}"
        for name in names_in(expr):
            assert any(name in m for t, m in marks.items() if under(t, paths)), f"{where}: no {name} test"


def test_every_cpu_test_is_in_exactly_one_tier_and_every_gpu_test_in_the_gpu_script(marks):
    cpu = {t: m for t, m in marks.items() if "gpu" not in m}
    held = {t: [n for n, (e, p) in tiers().items() if under(t, p) and selects(e, m)] for t, m in cpu.items()}
    assert {t: n for t, n in held.items() if len(n) != 1} == {}
    assert {t for t, m in marks.items() if "gpu" in m} == {
        t
        for t, m in marks.items()
        if any(under(t, p) and selects(e, m) for _, e, p in invocations("benchmarks/gpu_checks.sh"))
    }


def test_pytest_alone_is_the_fast_tier():
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    args = shlex.split(addopts)
    assert args[args.index("-m") + 1] == tiers()["fast"][0]
