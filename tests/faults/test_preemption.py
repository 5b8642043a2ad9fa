"""Preemption loses nothing: a real SIGTERM or SIGINT to a real run finishes the step, writes a checkpoint,
says where and exits 75; --resume continues bit for bit, with metrics cut back to the checkpoint; temporary
files never outlive a writer; experiments run again with the same command continue where they stopped.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from checkpoint_edits import phi, read_all
from cli_runs import env, sets, train_here
from largemeta import signals
from largemeta.cli import main
from largemeta.errors import PREEMPTED_EXIT, Stopped
from largemeta.files import atomic_write, is_temporary


def metric_steps(run):
    return [json.loads(line)["step"] for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def wait_for(predicate, proc, timeout=120):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"gave up waiting: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)


def test_sigterm_mid_run_checkpoints_exits_75_and_resume_is_bit_exact(tiny_suite, tiny_config, tmp_path):
    # no checkpoint is due before the end: all that survives the signal is what the signal itself saves
    cfg = tiny_config(tiny_suite, steps=150, checkpoint_every=1000, log_every=2)
    train_here(cfg, tmp_path / "straight")
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "largemeta", "train", "-q", "--out", str(run), "--steps", "150", *sets(cfg)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT, err
    step = read_all(run)["step"]
    assert 4 <= step < 150
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (
        f"stopped by SIGTERM after step {step} of 150; checkpoint written to '{run}/checkpoint.json'" in err
    )
    assert f"continue with: largemeta train --resume {run}" in err
    assert not [p for p in run.iterdir() if is_temporary(p.name) or p.name.endswith(".lock")]
    train_here(cfg, run, resume=True)
    a, b = phi(tmp_path / "straight"), phi(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metric_steps(run) == metric_steps(tmp_path / "straight")  # no duplicate, none missing


def test_resume_cuts_metrics_back_to_the_checkpoint_and_drops_a_torn_line(tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite, steps=12, checkpoint_every=6, log_every=2)
    train_here(cfg, tmp_path / "straight")
    run = tmp_path / "run"
    train_here({**cfg, "steps": 6}, run)
    at_6 = (run / "checkpoint.json").read_bytes()
    shutil.copytree(run / "checkpoint-00000006", tmp_path / "at_6")
    train_here({**cfg, "steps": 10}, run, resume=True)
    # a crash after logging steps 8 and 10 (and tearing a line) but before their checkpoint landed
    shutil.rmtree(run / "checkpoint-00000010")
    shutil.copytree(tmp_path / "at_6", run / "checkpoint-00000006")
    (run / "checkpoint.json").write_bytes(at_6)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 12, "mean_lo')
    # left by a kill -9: a manifest being replaced, a checkpoint folder being written
    (run / ".checkpoint.json.a1b2c3d4.tmp").write_bytes(b"half a manifest")
    (run / ".checkpoint-00000012.tmp").mkdir()
    (run / ".checkpoint-00000012.tmp" / "__0_0.distcp").write_bytes(b"half a shard")
    train_here(cfg, run, resume=True)
    assert metric_steps(run) == [2, 4, 6, 8, 10, 12]
    assert not (run / ".checkpoint.json.a1b2c3d4.tmp").exists()  # swept when the folder was taken
    assert not (run / ".checkpoint-00000012.tmp").exists()
    a, b = phi(tmp_path / "straight"), phi(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_signal_during_an_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("before")

    def write(fh):
        fh.write(b"x" * 4096)
        os.kill(os.getpid(), signal.SIGTERM)  # lands mid-write, as a scheduler's would
        fh.write(b"never")

    with signals.handling(), pytest.raises(Stopped):
        atomic_write(target, write)
    assert target.read_text() == "before"
    assert sorted(os.listdir(tmp_path)) == ["results.json"]


def test_ctrl_c_in_the_first_second_is_one_line(tiny_suite, tiny_config, tmp_path):
    # wherever it lands — imports (deferred to their end: a module interrupted half-way would break the next
    # import), argument parsing, loading data, the loop — one line and a clean exit. (Before the interpreter
    # has run largemeta's main, a few tens of ms, Python's own handler answers.)
    for i, delay in enumerate((0.4, 0.8, 1.2)):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "largemeta",
                "train",
                "-q",  # the stop's line alone (no header or progress lines from the loop)
                "--out",
                str(tmp_path / f"r{i}"),
                "--steps",
                "100000",
            ]
            + sets(tiny_config(tiny_suite)),
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == PREEMPTED_EXIT, (delay, err)  # train is resumable wherever it stopped
        assert err.count("\n") == 1 and "Traceback" not in err, (delay, err)


def experiment_argv(tiny_suite, tiny_config, tmp_path, algos="scratch,cts"):
    (tmp_path / "c.toml").write_text("")
    cfg = tiny_config(tiny_suite, checkpoint_every=1000, log_every=2)
    return [
        "experiment",
        "convergence",
        "--config",
        str(tmp_path / "c.toml"),
        "--algos",
        algos,
        "--steps",
        "120",
        "--milestones",
        "0.5,1",
        "--eval-steps",
        "2",
        "--seeds",
        "1",
        "--eval-batch-size",
        "8",
        "--out",
        str(tmp_path / "E"),
        *sets(cfg),
    ]


# a real process, stopped by a real SIGINT (test_every_experiment_... below covers each experiment in-process)
def test_an_experiment_stopped_by_ctrl_c_continues_with_the_same_command(
    tiny_suite, tiny_config, tmp_path, capsys
):
    argv = experiment_argv(tiny_suite, tiny_config, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "largemeta", *argv],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "E" / "cts" / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT, err
    assert "Traceback" not in err and "run the same command again to continue" in err.splitlines()[-1]
    done = json.loads((tmp_path / "E" / "results.json").read_text())["done"]
    assert done == ["scratch"]
    stopped_at = read_all(tmp_path / "E" / "cts")["step"]
    assert 2 <= stopped_at < 60

    assert main(argv) == 0  # the same command: carries on
    err = capsys.readouterr().err
    assert "scratch: done before, skipped" in err and "1 part(s) done before" in err
    result = json.loads((tmp_path / "E" / "results.json").read_text())
    assert result["done"] == ["scratch", "cts @ 60 steps", "cts @ 120 steps"] and result["complete"]
    assert set(result["algorithms"]["cts"]["accuracy"]) == {"60", "120"}
    steps = [r["step"] for r in result["algorithms"]["cts"]["loss"]]
    assert steps == list(range(2, 121, 2))  # the half-trained run resumed: no step logged twice

    assert main(argv) == 0  # finished: nothing is redone
    assert capsys.readouterr().err.count("done before, skipped") == 3

    other = experiment_argv(tiny_suite, tiny_config, tmp_path, algos="scratch,reptile")
    assert main(other) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(algos differ)" in err


@pytest.mark.parametrize("experiment", ["k-ablation", "tune", "pretrained", "demo"])
def test_every_experiment_skips_its_finished_parts_when_run_again(
    tiny_suite, tiny_config, tmp_path, capsys, monkeypatch, experiment
):
    import largemeta.cli.experiment as cli_experiment
    import largemeta.data.sources.datasets
    import largemeta.metatest as experiments

    (tmp_path / "c.toml").write_text("")
    common = ["--config", str(tmp_path / "c.toml"), "--steps", "2", "--eval-steps", "1", "--seeds", "1"]
    common += ["--eval-batch-size", "8", "--out", str(tmp_path / "X"), *sets(tiny_config(tiny_suite))]
    if (
        experiment == "demo"
    ):  # the demo, shrunk onto the tiny suite (its datasets are files: nothing to fetch)
        monkeypatch.setattr(largemeta.data.sources.datasets, "fetch_dataset", lambda name: None)
        evaluation = {"steps": 1, "seeds": 1, "batch_size": 8, "train_size": None, "targets": ("target",)}
        demo = dataclasses.replace(
            cli_experiment.DEMO,
            config={**tiny_config(tiny_suite), "steps": 8},
            algos=("cts", "scratch"),
            eval=evaluation,
        )
        monkeypatch.setattr(cli_experiment, "DEMO", demo)
        argv = ["demo", "--jobs", "1", "--out", str(tmp_path / "X")]
    elif experiment == "pretrained":
        train_here(tiny_config(tiny_suite, steps=2), tmp_path / "source")
        argv = ["experiment", "pretrained", "--init", str(tmp_path / "source"), "--sizes", "8,16", *common]
    elif experiment == "tune":
        argv = ["experiment", "tune", "--algos", "cts,reptile", "--betas", "0.1,1", "--val-steps", "1"]
        argv += ["--val-seeds", "1", "--val-train-size", "16", *common]
    else:
        argv = ["experiment", "k-ablation", "--algos", "cts,reptile", "--ks", "1,2", *common]
    original, calls = experiments.meta_test, []

    def stopping(*args, **kwargs):  # a real SIGINT, delivered during the third evaluation
        calls.append(1)
        if len(calls) == 3 and stop:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(experiments, "meta_test", stopping)
    stop = True
    assert main(argv) == PREEMPTED_EXIT
    assert "run the same command again" in capsys.readouterr().err
    finished = json.loads((tmp_path / "X" / "results.json").read_text())["done"]
    assert len(finished) == 2 + (experiment == "pretrained")  # pretrained: its training is a part too
    stop, calls[:] = False, []
    assert main(argv) == 0
    result = json.loads((tmp_path / "X" / "results.json").read_text())
    assert result["complete"] and result["done"][: len(finished)] == finished
    assert len(calls) == len(result["done"]) - len(finished)  # finished parts are not redone
    assert capsys.readouterr().err.count("done before, skipped") == len(finished)


def test_train_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "75 stopped by SIGTERM or SIGINT after writing a checkpoint" in out and "--resume" in out


def test_a_signal_during_an_import_waits_for_its_end(tmp_path, monkeypatch):
    (tmp_path / "half_way.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.1)\nCOMPLETE = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with signals.handling(), pytest.raises(Stopped):
        import half_way  # noqa: F401

        time.sleep(5)  # the signal is raised here, once the import is over, not inside the module
    assert sys.modules["half_way"].COMPLETE  # not a half-initialised module
    del sys.modules["half_way"]
