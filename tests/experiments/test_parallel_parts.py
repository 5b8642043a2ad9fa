"""``--jobs N``: an experiment's parts in worker processes — order within a chain, WAIT, results kept in the
order given, a worker's error raised here, the same results as one at a time, and a stop by SIGTERM to the
process group that exits 75 and continues."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_runs import sets
from largemeta.errors import UserError
from largemeta.experiments import Common, EvalSettings, convergence
from largemeta.experiments.pool import run_parts
from largemeta.experiments.spec import WAIT, Part
from largemeta.train.config import from_mapping


def _toy(label: str, folder: str, wait_for: str | None = None, fail: bool = False) -> str:
    """A part's work: write when it started and ended (and by whom); ``wait_for``: first wait up to 60 s
    for a file another part writes (a deadlock unless the two run at once)."""
    start = time.time()
    if wait_for is not None:
        deadline = start + 60
        while not (Path(folder) / wait_for).exists():
            if time.time() > deadline:
                return f"{label}: timed out waiting for {wait_for}"
            time.sleep(0.02)
    if fail:
        raise UserError(f"part {label} refuses")
    (Path(folder) / label).write_text(json.dumps({"start": start, "end": time.time(), "pid": os.getpid()}))
    return f"value of {label}"


def _times(folder: Path, label: str) -> dict:
    return json.loads((folder / label).read_text())


def _parts(folder: Path, **toy):
    def part(label, chain=None, **kw):
        return Part(label, functools.partial(_toy, label, str(folder), **kw), chain=chain)

    yield part("A1", chain="A", wait_for="B1")  # only finishes if B1 runs beside it
    yield part("A2", chain="A")
    yield part("B1", chain="B")
    yield WAIT
    yield part("C1", **toy)


def _run(parts, jobs, done=()):
    kept, logged = [], []
    run_parts(
        iter(parts),
        jobs,
        done=lambda label: label in done,
        finish=lambda part, value: kept.append((part.label, value)),
        log=logged.append,
    )
    return kept, logged


def test_two_workers_run_two_chains_at_once_keeping_order_chains_and_wait(tmp_path):
    kept, logged = _run(_parts(tmp_path), jobs=2)
    # kept in the order given (A1, A2 is held by its chain, so B1 is given second), whatever finished first
    assert kept == [(x, f"value of {x}") for x in ("A1", "B1", "A2", "C1")]
    a1, a2, b1, c1 = (_times(tmp_path, x) for x in ("A1", "A2", "B1", "C1"))
    assert a1["pid"] != os.getpid() and len({a1["pid"], b1["pid"]}) == 2  # in two worker processes
    assert a2["start"] >= a1["end"]  # a chain runs in order
    assert c1["start"] >= max(a2["end"], b1["end"])  # nothing passes a WAIT
    assert logged[:2] == ["A1: started (1 of 2 workers busy)", "B1: started (2 of 2 workers busy)"]


def test_finished_parts_are_skipped_and_one_job_runs_here_in_order(tmp_path):
    parts = [p for p in _parts(tmp_path) if p is WAIT or p.label != "A1"]  # one job: A1 would wait forever
    kept, logged = _run(parts, jobs=1, done={"B1"})
    assert kept == [("A2", "value of A2"), ("C1", "value of C1")]
    assert logged == ["A2: started", "C1: started"]
    assert _times(tmp_path, "A2")["pid"] == os.getpid() and not (tmp_path / "B1").exists()


def test_an_error_in_a_worker_is_raised_here_after_the_finished_parts_are_kept(tmp_path):
    kept = []
    with pytest.raises(UserError, match="part C1 refuses"):
        run_parts(
            _parts(tmp_path, fail=True),
            2,
            done=lambda label: False,
            finish=lambda part, value: kept.append(part.label),
            log=lambda text: None,
        )
    assert kept == ["A1", "B1", "A2"]


def _convergence(tiny_suite, tiny_config, out: Path, jobs: int) -> dict:
    cfg = from_mapping(tiny_config(tiny_suite, steps=8))
    common = Common(["cts", "reptile", "scratch"], out, EvalSettings(steps=3, seeds=2, batch_size=8))
    common = Common(**{**common.__dict__, "train_seeds": 2, "jobs": jobs})
    return convergence(cfg, common, fractions=(0.5, 1.0), tune={"reptile": (0.1, 1.0)}, tune_fraction=0.5)


def _science(result: dict, out: Path) -> dict:
    """What the experiment measured (not how long it took, nor in which order the parts were kept)."""
    algos = {a: {k: v for k, v in e.items() if k != "seconds"} for a, e in result["algorithms"].items()}
    found = {"algorithms": algos, "tuning": result["tuning"], "reach": result["steps_to_reach"]}
    return json.loads(json.dumps(found, sort_keys=True).replace(str(out), "OUT"))


def test_two_jobs_measure_what_one_job_measures(tiny_suite, tiny_config, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each of the two workers (on 2 cores): the same float reductions
    try:
        one = _convergence(tiny_suite, tiny_config, tmp_path / "one", jobs=1)
    finally:
        torch.set_num_threads(threads)
    two = _convergence(tiny_suite, tiny_config, tmp_path / "two", jobs=2)
    assert _science(two, tmp_path / "two") == _science(one, tmp_path / "one")
    assert sorted(two["done"]) == sorted(one["done"]) and len(one["done"]) == 11
    # the two seeds' runs side by side: kept in the order given, the first milestone of each first
    assert two["done"][:2] == ["cts @ 4 steps (seed 0)", "cts @ 4 steps (seed 1)"]
    assert set(two["tuning"]["reptile"]["validation"]) == {"0.1", "1"}


@pytest.mark.slow
@pytest.mark.parametrize("to", ["group", "driver"])
def test_sigterm_stops_the_workers_resumably_and_the_run_continues(tiny_suite, tiny_config, tmp_path, to):
    """SIGTERM to the process group (SLURM, Ctrl-C), or to the driver alone (which then tells the workers)."""
    steps = 1200  # long enough (tens of seconds) for the signal to find both workers training
    cfg = tiny_config(tiny_suite, steps=steps, log_every=100, checkpoint_every=1000)
    (tmp_path / "c.toml").write_text("")
    out = tmp_path / "exp"
    argv = [
        sys.executable,
        "-m",
        "largemeta",
        "experiment",
        "convergence",
        "--config",
        str(tmp_path / "c.toml"),
    ]
    argv += ["--algos", "cts,reptile", "--steps", str(steps), "--milestones", "0.5,1", "--jobs", "2"]
    argv += ["--eval-steps", "2", "--seeds", "1", "--eval-batch-size", "8", "--out", str(out), *sets(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    logged = [out / algo / "metrics.jsonl" for algo in ("cts", "reptile")]
    deadline = time.monotonic() + 120
    while not all(p.exists() and p.read_text().strip() for p in logged) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    # both workers are training
    os.killpg(proc.pid, signal.SIGTERM) if to == "group" else os.kill(proc.pid, signal.SIGTERM)
    rest = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 75, rest
    assert "run the same command again to continue" in rest
    results = json.loads((out / "results.json").read_text())
    assert f"reptile @ {steps} steps" not in results["done"]
    assert json.loads((out / "reptile" / "checkpoint.json").read_text())["step"] > 0  # kept its steps
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    final = json.loads((out / "results.json").read_text())
    parts = {f"{a} @ {m} steps" for a in ("cts", "reptile") for m in (steps // 2, steps)}
    assert set(final["done"]) == parts and len(final["done"]) == 4
    assert "continuing the experiment" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["k-ablation", "tune"])
def test_the_other_parallel_kinds_measure_with_two_jobs_what_they_measure_with_one(
    tiny_suite, tiny_config, tmp_path, kind
):
    """k-ablation (parts without chains) and tune (a WAIT before the best β's meta-tests), each run as a
    command with --jobs 2 and --jobs 1 at one thread: the same measurements."""
    (tmp_path / "c.toml").write_text("")
    common = ["--config", str(tmp_path / "c.toml"), "--steps", "4", "--eval-steps", "2", "--seeds", "2"]
    common += ["--eval-batch-size", "8", "--algos", "cts,reptile", *sets(tiny_config(tiny_suite))]
    own = ["--ks", "1,2"] if kind == "k-ablation" else ["--betas", "0.1,1", "--val-steps", "2"]
    if kind == "tune":
        own += ["--val-seeds", "1", "--val-train-size", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    found = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        argv = [sys.executable, "-m", "largemeta", "experiment", kind, *common, *own, "--jobs", jobs]
        done = subprocess.run([*argv, "--out", str(out)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        result = json.loads((out / "results.json").read_text())
        keys = ("algorithms", "validation", "best", "test", "meta_updates")
        measured = {k: result[k] for k in keys if k in result}
        measured["done"] = sorted(result["done"])
        found[jobs] = json.loads(json.dumps(measured, sort_keys=True).replace(str(out), "OUT"))
    assert found["2"] == found["1"] and found["1"]
