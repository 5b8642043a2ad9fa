"""More ranks than tasks: each task served by a group of ranks (its batch split, gradients and BatchNorm
statistics averaged over the group). The same φ as one process; checkpoints resume on any valid world size;
a rank that dies stops every rank in one line; two localhost "nodes" train together."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from checkpoint_edits import published_step, read_all
from cli_runs import command, env, free_port, sets, spawn_ranks
from largemeta.core.algorithms import ALGORITHMS
from largemeta.errors import UserError
from largemeta.train import groups
from largemeta.train.layout import layout

HERE = Path(__file__).parent
LARGEMETA_TRAIN = [sys.executable, "-m", "largemeta", "train"]


def assert_runs_agree(a: Path, b: Path, tol: float = 1e-5) -> None:
    """φ, every task's θ and BatchNorm statistics within ``tol``; sampler states identical."""
    sa, sb = read_all(a), read_all(b)
    assert sa["step"] == sb["step"]
    for k, v in sa["shared"]["phi"].items():
        assert (v - sb["shared"]["phi"][k]).abs().max() <= tol, k
    for ta, tb in zip(sa["tasks"], sb["tasks"], strict=True):
        for k, v in ta["params"].items():
            assert (v - tb["params"][k]).abs().max() <= tol, k
        for k, v in ta["task"]["buffers"].items():
            assert (v.double() - tb["task"]["buffers"][k].double()).abs().max() <= tol, k
        assert torch.equal(
            ta["task"]["sampler"]["train"]["generator"], tb["task"]["sampler"]["train"]["generator"]
        )


# ------------------------------------------------------------------------------------------- the layout
def test_layout_deals_tasks_or_groups_ranks():
    assert [layout(5, r, 2).mine for r in range(2)] == [[0, 2, 4], [1, 3]]  # W <= T: round-robin
    lay = [layout(2, r, 6) for r in range(6)]  # W > T: G = 3 consecutive ranks per task
    assert [x.mine for x in lay] == [[0], [0], [0], [1], [1], [1]]
    assert [x.part for x in lay] == [0, 1, 2, 0, 1, 2] and [x.leader for x in lay] == [1, 0, 0, 1, 0, 0]
    assert lay[0].group_size == 3 and lay[0].ranks(1) == [3, 4, 5]
    assert layout(8, 0, 8).group_size == 1 and layout(8, 0, 64).group_size == 8


def test_a_world_size_without_equal_groups_is_refused_in_one_line():
    with pytest.raises(UserError) as err:
        layout(2, 0, 3)
    text = str(err.value)
    assert "\n" not in text and "3 ranks cannot serve 2 meta-train tasks" in text and "1..2" in text
    assert "4, 6" in text


@pytest.mark.parametrize(
    "change, message",
    [
        ({"batch_size": 6}, "batch_size 6 does not split over 4 ranks"),
        ({"executor": "batched"}, "executor 'batched'"),
        ({"shift_error_every": 1}, "shift_error_every"),
    ],
)
def test_what_a_group_cannot_do_is_refused(change, message):
    cfg = SimpleNamespace(**{"batch_size": 8, "executor": "loop", "shift_error_every": 0, **change})
    with pytest.raises(UserError, match=message):
        groups.check_config(cfg, layout(2, 0, 8), ALGORITHMS.get("reptile"))
    groups.check_config(cfg, layout(2, 0, 2), ALGORITHMS.get("reptile"))  # one rank per task: anything goes


def test_imaml_is_refused_in_task_groups():
    cfg = SimpleNamespace(batch_size=8, executor="loop", shift_error_every=0)
    with pytest.raises(UserError, match="imaml solves by conjugate gradient with one rank's"):
        groups.check_config(cfg, layout(2, 0, 4), ALGORITHMS.get("imaml"))


def test_slice_sampler_draws_the_whole_batch_and_keeps_its_slice():
    from largemeta.testing import RandomImageSampler

    whole = RandomImageSampler(4, 10, channels=1, seed=3)
    parts = [groups.SliceSampler(RandomImageSampler(4, 10, channels=1, seed=3), p, 4) for p in range(4)]
    for _ in range(3):  # every part advances the generator like the whole batch: the streams stay aligned
        x, y = whole.sample_train(8)
        got = [s.sample_train(8) for s in parts]
        assert torch.equal(torch.cat([g[0] for g in got]), x) and torch.equal(
            torch.cat([g[1] for g in got]), y
        )
    with pytest.raises(UserError, match="does not split"):
        parts[0].sample_train(6)


# ------------------------------------------------------------------------------------- multi-process
@pytest.mark.distributed
def test_group_batchnorm_gives_the_whole_batch_statistics_and_gradients(tmp_path):
    out = tmp_path / "bn.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run([*cmd, str(HERE / "group_bn_worker.py"), str(out)], env=env(), check=True, timeout=120)
    gaps = json.loads(out.read_text())
    assert gaps["synced_grad_gap"] <= 1e-6 and gaps["synced_buffer_gap"] <= 1e-6
    assert gaps["local_grad_gap"] > 1e-3 and gaps["local_buffer_gap"] > 1e-3  # the test can tell


@pytest.mark.distributed
def test_four_ranks_over_two_tasks_give_the_phi_of_one_process(two_task_suite, tiny_config, tmp_path):
    cfg = tiny_config(two_task_suite)  # ConvNet: BatchNorm after every convolution
    command(["train", "--out", str(tmp_path / "one"), "--steps", "12", *sets(cfg)])
    command(["train", "--out", str(tmp_path / "four"), "--steps", "12", *sets(cfg)], nproc=4)
    assert_runs_agree(tmp_path / "one", tmp_path / "four")
    manifest = json.loads((tmp_path / "four" / "checkpoint.json").read_text())
    # rank 0 wrote φ and task 0, rank 2 (task 1's group leader) task 1; ranks 1 and 3 nothing
    assert manifest["entries"] == {"shared": 0, "task/0": 0, "task/1": 2}
    assert sorted(manifest["files"]) == [".metadata", "__0_0.distcp", "__2_0.distcp"]


@pytest.mark.distributed
def test_a_four_rank_checkpoint_resumes_on_two_ranks_and_on_one(two_task_suite, tiny_config, tmp_path):
    cfg = tiny_config(two_task_suite)
    command(["train", "--out", str(tmp_path / "straight"), "--steps", "12", *sets(cfg)])
    command(["train", "--out", str(tmp_path / "run"), "--steps", "6", *sets(cfg)], nproc=4)
    shutil.copytree(tmp_path / "run", tmp_path / "run1")
    # tasks re-assigned: one per rank
    command(["train", "--resume", str(tmp_path / "run"), "--steps", "12"], nproc=2)
    command(["train", "--resume", str(tmp_path / "run1"), "--steps", "12"])
    assert_runs_agree(tmp_path / "straight", tmp_path / "run")
    assert_runs_agree(tmp_path / "straight", tmp_path / "run1")


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("algo", ["cts-fomaml", "cts-leap", "cts-fomaml-official", "multitask"])
def test_other_algorithms_in_task_groups_give_the_phi_of_one_process(
    two_task_suite, tiny_config, tmp_path, algo
):
    cfg = tiny_config(two_task_suite, algo=algo)
    command(["train", "--out", str(tmp_path / "one"), "--steps", "12", *sets(cfg)])
    command(["train", "--out", str(tmp_path / "four"), "--steps", "12", *sets(cfg)], nproc=4)
    assert_runs_agree(tmp_path / "one", tmp_path / "four")


@pytest.mark.distributed
@pytest.mark.slow
def test_three_ranks_for_two_tasks_stop_every_rank_in_one_line(two_task_suite, tiny_config, tmp_path):
    procs = spawn_ranks(
        [
            *LARGEMETA_TRAIN,
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "4",
            *sets(tiny_config(two_task_suite)),
        ],
        3,
        stdout=subprocess.DEVNULL,
    )
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2 and err.count("\n") == 1, err
        assert "3 ranks cannot serve 2 meta-train tasks" in err and "valid world sizes" in err


@pytest.mark.distributed
def test_a_rank_killed_inside_a_group_stops_every_rank_and_the_run_resumes_on_4_2_and_1(
    two_task_suite, tiny_config, tmp_path
):
    cfg = tiny_config(two_task_suite, log_every=1, checkpoint_every=4)
    run = tmp_path / "run"
    procs = spawn_ranks(
        [*LARGEMETA_TRAIN, "--out", str(run), "--steps", "100000", *sets(cfg)], 4, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 180
        while (published_step(run) or 0) < 8:
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail(f"training did not checkpoint: {procs[0].communicate(timeout=30)[1][-2000:]}")
            time.sleep(0.2)
        procs[3].send_signal(signal.SIGKILL)  # a non-leader of task 1's group (ranks 2 and 3)
        killed = time.time()
        for p in procs[:3]:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 3, err[-2000:]
            assert "another rank died or stopped responding" in err.strip().splitlines()[-1]
            assert "Traceback" not in err
        assert time.time() - killed < 60  # within the collective timeout (20 s) and start-up slack
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    step = read_all(run)["step"]
    assert step % 4 == 0 and step >= 8
    until = str(step + 8)
    command(["train", "--out", str(tmp_path / "straight"), "--steps", until, *sets(cfg)])
    for world in (4, 2, 1):
        again = tmp_path / f"resumed-on-{world}"
        shutil.copytree(run, again)
        command(["train", "--resume", str(again), "--steps", until], nproc=world)
        assert_runs_agree(tmp_path / "straight", again)


@pytest.mark.distributed
def test_two_localhost_nodes_train_together(two_task_suite, tiny_config, tmp_path):
    cfg = tiny_config(two_task_suite)
    command(["train", "--out", str(tmp_path / "one"), "--steps", "12", *sets(cfg)])
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=2",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=127.0.0.1:{port}",
                "--rdzv_id=largemeta-test",
                "-m",
                "largemeta",
                "train",
                "--out",
                str(tmp_path / "two-nodes"),
                "--steps",
                "12",
                *sets(cfg),
            ],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for node in nodes:
        out, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]
    assert json.loads((tmp_path / "two-nodes" / "checkpoint.json").read_text())["info"]["world"] == 4
    assert_runs_agree(tmp_path / "one", tmp_path / "two-nodes")
