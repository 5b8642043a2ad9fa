"""Real training processes with task pools and streamed data: kill -9 then --resume gives the φ of an
uninterrupted run; a pool shows every task; bad input and broken data end in one line with exit 2 and the last
checkpoint intact."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from checkpoint_edits import phi, read_all
from cli_runs import command, env, sets
from largemeta.cli import main


def assert_same_phi(a, b):
    pa, pb = phi(a), phi(b)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def kill_9_and_resume(run: Path, steps: int, first_args: list[str], seed: int = 0, kills: int = 4) -> int:
    """Start, kill -9 at random moments after the first checkpoint (``kills`` times), then resume to the end;
    returns how many kills landed before the end."""
    rng = random.Random(seed)
    base = [sys.executable, "-m", "largemeta", "train", "--steps", str(steps)]
    landed = 0
    for i in range(kills):
        cmd = base + (first_args if i == 0 else ["--resume", str(run)])
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 90
        while not (run / "checkpoint.json").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        state = read_all(run)  # never torn
        landed += state["step"] < steps
    command(["train", "--resume", str(run), "--steps", str(steps)], timeout=None)
    return landed


# ------------------------------------------------------------------------------------------------ pools


@pytest.fixture
def pool_suite(make_suite):
    return make_suite(n_tasks=20, per_class=12, size=16)


def pool_config(suite, **overrides):
    cfg = {
        "suite": str(suite),
        "model": "convnet",
        "width": 4,
        "batch_size": 4,
        "k": 2,
        "log_every": 2,
        "checkpoint_every": 1,
        "device": "cpu",
        "inner_lr": 0.05,
        "meta_lr": 0.1,
        "eval_batches": 0,
        "tasks_per_trajectory": 4,
    }
    cfg.update(overrides)
    return cfg


@pytest.mark.slow
def test_a_pool_of_20_tasks_4_at_a_time_shows_every_task_and_resumes_exactly_after_kill_9(
    pool_suite, tmp_path
):
    cfg = pool_config(pool_suite)
    command(["train", "--out", str(tmp_path / "straight"), "--steps", "200", *sets(cfg)], timeout=None)
    lines = [json.loads(s) for s in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    draws = [d for line in lines for d in line.get("draws", [])]
    assert [d["step"] for d in draws] == list(range(0, 201, 2))  # at the start and at every restart
    assert all(len(set(d["tasks"])) == 4 for d in draws)
    assert {t for d in draws for t in d["tasks"]} == {f"t{i}" for i in range(20)}  # every task ran
    assert {t for d in draws[:5] for t in d["tasks"]} == {f"t{i}" for i in range(20)}  # in the first pass
    assert all(
        set(line["tasks"]) <= {f"t{i}" for i in range(20)} and len(line["active_tasks"]) == 4
        for line in lines
    )

    run = tmp_path / "crashy"
    landed = kill_9_and_resume(run, 200, ["--out", str(run), *sets(cfg)])
    assert landed >= 2
    assert_same_phi(tmp_path / "straight", run)
    a, b = (read_all(r)["pool"] for r in (tmp_path / "straight", run))
    assert a["assignment"] == b["assignment"] and a["queue"] == b["queue"]
    for x, y in zip(a["tasks"], b["tasks"], strict=True):  # every pool task's head, BN and sampler
        assert torch.equal(x["private"]["head.weight"], y["private"]["head.weight"])
        assert torch.equal(
            x["task"]["sampler"]["train"]["generator"], y["task"]["sampler"]["train"]["generator"]
        )


@pytest.mark.slow
def test_a_pooled_run_resumes_with_a_longer_budget(pool_suite, tmp_path):
    cfg = pool_config(pool_suite, checkpoint_every=4)
    command(["train", "--out", str(tmp_path / "straight"), "--steps", "12", *sets(cfg)], timeout=None)
    command(["train", "--out", str(tmp_path / "split"), "--steps", "6", *sets(cfg)], timeout=None)
    command(["train", "--resume", str(tmp_path / "split"), "--steps", "12"], timeout=None)
    assert_same_phi(tmp_path / "straight", tmp_path / "split")


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"tasks_per_trajectory": 21}, "tasks_per_trajectory=21 is larger than the pool: it has 20 tasks"),
        ({"algo": "multitask"}, "tasks_per_trajectory needs a meta-learning algorithm"),
        ({"executor": "cuda_graph"}, "does not support task pools"),
    ],
)
def test_bad_pool_settings_are_one_line(pool_suite, tmp_path, capsys, overrides, needle):
    cfg = pool_config(pool_suite, **overrides)
    code = main(["train", "--out", str(tmp_path / "run"), "--steps", "4", *sets(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "checkpoint.json").exists()


@pytest.mark.distributed
def test_a_pool_over_two_ranks_gives_the_phi_of_one_and_resumes_on_one(pool_suite, tmp_path):
    cfg = pool_config(pool_suite, checkpoint_every=6)

    def torchrun(args):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        out = subprocess.run(
            [*cmd, "-m", "largemeta", "train", *args], env=env(), capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-3000:]

    command(["train", "--out", str(tmp_path / "one"), "--steps", "12", *sets(cfg)], timeout=None)
    torchrun(["--out", str(tmp_path / "two"), "--steps", "12", *sets(cfg)])
    torchrun(["--out", str(tmp_path / "split"), "--steps", "6", *sets(cfg)])
    command(["train", "--resume", str(tmp_path / "split"), "--steps", "12"], timeout=None)
    for other in ("two", "split"):
        a, b = phi(tmp_path / "one"), phi(tmp_path / other)
        for k in a:
            assert (a[k] - b[k]).abs().max().item() <= 1e-5, (other, k)
    one, two = (read_all(tmp_path / r)["pool"] for r in ("one", "two"))
    assert one["assignment"] == two["assignment"]
    for x, y in zip(one["tasks"], two["tasks"], strict=True):
        assert (x is None) == (y is None)
        if x is not None:  # heads handed from rank to rank as tasks moved
            assert (x["private"]["head.weight"] - y["private"]["head.weight"]).abs().max() <= 1e-5


# ------------------------------------------------------------------------------------------------ streams


@pytest.fixture
def folder_suite(tmp_path):
    """Two tasks over one folder of 4 x 24 grey PNG files (16 px), and a cache folder of its own."""
    root = tmp_path / "pictures"
    rng = random.Random(0)
    for c in range(4):
        for i in range(24):
            (root / f"c{c}").mkdir(parents=True, exist_ok=True)
            img = Image.new("L", (16, 16), color=rng.randrange(40))
            img.paste(220, (4 * c, 4 * c, 4 * c + 5, 4 * c + 5))
            img.save(root / f"c{c}" / f"{i:03d}.png")
    suite = tmp_path / "folder.toml"
    suite.write_text(
        f'name = "pictures"\n[defaults]\nimage_size = 16\nchannels = 1\ncrop_padding = 2\nflip = true\n'
        f'[[meta_train]]\nname = "low"\ndataset = "{root}"\nclasses = "0-1"\n'
        f'[[meta_train]]\nname = "high"\ndataset = "{root}"\nclasses = "2-3"\n'
    )
    return suite, root, tmp_path / "cache"


def stream_config(suite, cache, **overrides):
    cfg = {
        "suite": str(suite),
        "model": "convnet",
        "width": 4,
        "batch_size": 8,
        "k": 3,
        "log_every": 3,
        "checkpoint_every": 1,
        "device": "cpu",
        "eval_batches": 1,
        "data_dir": str(cache),
        "stream_workers": 1,
    }
    cfg.update(overrides)
    return cfg


@pytest.mark.slow
def test_a_folder_over_the_budget_is_streamed_and_resumes_exactly_after_kill_9(folder_suite, tmp_path):
    suite, _, cache = folder_suite
    # 192 images x 16 x 16 = 48 KiB decoded: a budget of 20 KiB is exceeded, so auto streams
    cfg = stream_config(suite, cache, memory_budget_gb=20 / 2**20)
    out = command(["train", "--out", str(tmp_path / "straight"), "--steps", "30", *sets(cfg)], timeout=None)
    assert "data_placement auto" in out.stderr and out.stderr.count("streamed from disk") == 1
    line = json.loads((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["data_placement"] == "stream" and set(line["tasks"]) == {"low", "high"}
    assert read_all(tmp_path / "straight")["data_placement"] == "stream"
    run = tmp_path / "crashy"
    assert kill_9_and_resume(run, 30, ["--out", str(run), *sets(cfg)], seed=1) >= 2
    assert_same_phi(tmp_path / "straight", run)
    # on a CPU the device-resident run draws the very same batches
    device = stream_config(suite, cache, data_placement="device")
    command(["train", "--out", str(tmp_path / "device"), "--steps", "30", *sets(device)], timeout=None)
    assert_same_phi(tmp_path / "straight", tmp_path / "device")


def start_streamed_run(cfg, run: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        # -q: the error line alone on stderr (no progress lines before it)
        [
            sys.executable,
            "-m",
            "largemeta",
            "train",
            "-q",
            "--out",
            str(run),
            "--steps",
            "100000",
            *sets(cfg),
        ],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 90
    while not (run / "checkpoint.json").exists():
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"no checkpoint appeared: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def test_a_file_truncated_mid_run_stops_in_one_line_naming_it(folder_suite, tmp_path):
    suite, root, cache = folder_suite
    cfg = stream_config(suite, cache, data_placement="stream", checkpoint_every=5, eval_batches=0)
    run = tmp_path / "run"
    proc = start_streamed_run(cfg, run)
    for c in range(4):  # every file of every class: the next batch reads a broken one
        for path in (root / f"c{c}").iterdir():
            path.write_bytes(path.read_bytes()[:40])
    code, err = finish(proc)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err[-2000:]
    assert "cannot read" in err and ".png" in err and str(root) in err
    state = read_all(run)  # whole, and from a step the schedule saves at
    assert state["step"] % 5 == 0


def test_a_worker_killed_mid_run_stops_in_one_line_with_the_checkpoint_intact(folder_suite, tmp_path):
    suite, _, cache = folder_suite
    cfg = stream_config(suite, cache, data_placement="stream", checkpoint_every=5, eval_batches=0)
    run = tmp_path / "run"
    proc = start_streamed_run(cfg, run)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert children, "the training process has no worker process"
    os.kill(int(children[0]), signal.SIGKILL)
    code, err = finish(proc)
    assert code == 2 and err.count("\n") == 1 and "worker process died" in err and "Traceback" not in err, (
        err[-3000:]
    )
    state = read_all(run)  # whole, and from a step the schedule saves at
    assert state["step"] % 5 == 0


def test_the_shipped_pool_config_and_suite():
    from largemeta.data.tasks.suite import load_suite
    from largemeta.train.config import load_config

    cfg = load_config("pool")
    assert cfg.suite == "pool" and cfg.tasks_per_trajectory == 4 and cfg.k % cfg.log_every == 0
    suite = load_suite("pool")
    assert len(suite.meta_train) == 23 and {t.dataset for t in suite.meta_train} == {
        "mnist",
        "fashion_mnist",
        "digits",
        "quickdraw",
    }
    quickdraw = [t for t in suite.meta_test if t.dataset == "quickdraw"]
    assert [t.classes for t in quickdraw] == [
        "240-274",
        "275-309",
        "310-344",
    ]  # disjoint from the pool's 0-239


@pytest.mark.network
def test_the_pool_config_trains(builtin_datasets, tmp_path):
    out = command(
        ["train", "-q", "--config", "pool", "--out", str(tmp_path / "run"), "--steps", "4", "--k", "2"]
        + ["--device", "cpu", "--set", "width=4", "--set", "batch_size=4", "--set", "log_every=2"]
        + ["--set", "eval_batches=0"],
        timeout=None,
    )
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [len(d["tasks"]) for line in lines for d in line["draws"]] == [4, 4, 4] and out.stderr == ""


@pytest.fixture
def builtin_datasets():
    from largemeta.data.sources.datasets import fetch_dataset

    for name in ("mnist", "fashion_mnist", "quickdraw", "digits"):
        fetch_dataset(name)
