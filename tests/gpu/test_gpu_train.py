"""``largemeta train`` end to end on the test device: every algorithm family, every executor against the loop,
``--resume``."""

from __future__ import annotations

import pytest
from gpu_device import RESOLVED, assert_resume_matches, max_abs_diff, needs_cuda, record
from gpu_runs import assert_trained, metrics, phi, train

from checkpoint_edits import read_all

pytestmark = pytest.mark.gpu

# algorithm -> meta-updates in 12 steps with K = 4 (CTS: one per step; the others: one per trajectory)
ALGOS = {"cts": 12, "reptile": 3, "fomaml": 3, "leap": 3, "imaml": 3, "multitask": 0}


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_train_on_the_device(algo, run_config, tmp_path):
    cfg = run_config(algo=algo, steps=12, k=4, log_every=4, checkpoint_every=6, imaml_cg_steps=3)
    train(cfg, tmp_path / "run")
    lines = assert_trained(tmp_path / "run", cfg, RESOLVED)
    assert lines[-1]["meta_updates"] == ALGOS[algo]
    if ALGOS[algo]:
        assert lines[-1]["shift_norm"] is not None and lines[-1]["shift_norm"] > 0
    else:  # joint training: φ is the body trained with the heads; 8 more steps move it
        train({**cfg, "steps": 4}, tmp_path / "short")
        assert max_abs_diff(phi(tmp_path / "short"), phi(tmp_path / "run")) > 0


def test_resume_on_the_device(run_config, tmp_path):
    """Half a run, then ``--resume`` to the end, against the same run straight through (twice: how far the
    device repeats itself). Asserted: bit-exact where the device repeats itself, else within its own noise."""
    cfg = run_config(steps=12, checkpoint_every=6, log_every=2)
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    train({**cfg, "steps": 6}, tmp_path / "r")
    train(cfg, tmp_path / "r", resume=True)
    assert [m["step"] for m in metrics(tmp_path / "r")] == [m["step"] for m in metrics(tmp_path / "a")]
    assert_resume_matches(phi(tmp_path / "a"), phi(tmp_path / "b"), phi(tmp_path / "r"), "resume_loop")


@needs_cuda
def test_resume_with_the_cuda_graph_recaptures(run_config, tmp_path):
    """The CUDA-graph meta-step resumed from a checkpoint: a new process state, captured again."""
    cfg = run_config(steps=12, checkpoint_every=6, log_every=2, executor="cuda_graph")
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    train({**cfg, "steps": 6}, tmp_path / "r")
    train(cfg, tmp_path / "r", resume=True)
    assert_trained(tmp_path / "r", cfg, RESOLVED)
    assert_resume_matches(phi(tmp_path / "a"), phi(tmp_path / "b"), phi(tmp_path / "r"), "resume_cuda_graph")


# executor -> (max |φ - φ_loop| allowed after 8 steps of the tiny run): fp32 kernels differ in rounding only;
# bf16 keeps 8 bits of mantissa
EXECUTORS = {
    "channels_last": 1e-4,
    "batched": 1e-4,
    "autocast": 3e-2,
    "channels_last+autocast": 3e-2,
    "cuda_graph": 1e-4,
}


@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_every_executor_trains_like_the_loop(executor, run_config, tmp_path):
    if executor == "cuda_graph" and RESOLVED == "cpu":
        pytest.skip("CUDA only (the CPU refusal is tested in tests/execution)")
    # the paper's step sizes keep bf16's rounding from compounding (see tests/execution)
    hp = dict(inner_lr=0.01, meta_lr=0.01, steps=8, log_every=4, checkpoint_every=8)
    loop = run_config(**hp)
    train(loop, tmp_path / "loop")
    fast = {**loop, "executor": executor}
    train(fast, tmp_path / executor)
    assert_trained(tmp_path / executor, fast, RESOLVED)
    diff = max_abs_diff(phi(tmp_path / "loop"), phi(tmp_path / executor))
    record(f"executor_{executor.replace('+', '_')}", {"phi_max_abs_vs_loop": diff, "steps": 8})
    assert diff <= EXECUTORS[executor], diff
    a, b = metrics(tmp_path / "loop")[-1]["mean_loss"], metrics(tmp_path / executor)[-1]["mean_loss"]
    assert abs(a - b) <= (5e-2 if "autocast" in executor else 1e-3) * abs(a), (a, b)


def test_a_run_on_the_device_checkpoints_tensors_that_load_anywhere(run_config, tmp_path):
    """The checkpoint of a device run holds plain tensors: read in this process on the CPU, φ is there whole
    and equals what ``load_phi`` gives."""
    from largemeta.phi import load_phi

    cfg = run_config(steps=4, checkpoint_every=4, log_every=4)
    train(cfg, tmp_path / "run")
    whole = read_all(tmp_path / "run")
    loaded, meta = load_phi(tmp_path / "run")
    assert meta["step"] == 4 and meta["config"]["device"] == RESOLVED
    assert max_abs_diff(whole["shared"]["phi"], loaded) == 0.0
