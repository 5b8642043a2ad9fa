"""Task images on the test device: streamed by DataLoader workers (pinned memory on CUDA) against resident on
the device, ``auto`` placement, a streamed run resumed, a task pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gpu_device import DEVICE, ON_CUDA, RESOLVED, assert_resume_matches, max_abs_diff, needs_cuda
from gpu_runs import assert_trained, metrics, phi, train

from largemeta.data.tasks.loader import TaskLoader
from largemeta.data.tasks.suite import TaskSpec

pytestmark = pytest.mark.gpu


@pytest.fixture
def npz_spec(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "toy.npz"
    np.savez(path, x=rng.integers(0, 256, (300, 12, 12), dtype=np.uint8), y=np.arange(300) % 5)
    # at the stored size: no resize, so images decoded by the workers equal those resized on the device
    spec = TaskSpec("toy", str(path), classes="0-3", image_size=12, channels=1, crop_padding=2, flip=True)
    return spec, tmp_path / "cache"


def test_streamed_batches_arrive_on_the_device_and_repeat_with_the_seed(npz_spec):
    spec, cache = npz_spec
    loaders = [TaskLoader(DEVICE, "stream", data_dir=cache, workers=2) for _ in range(2)]
    resident = TaskLoader(DEVICE, "device", data_dir=cache)
    try:
        a, b = (loader.task_images(spec, seed=7) for loader in loaders)
        for _ in range(5):
            (xa, ya), (xb, yb) = a.sample_train(16), b.sample_train(16)
            assert xa.device.type == DEVICE and xa.shape == (16, 1, 12, 12) and xa.dtype == torch.float32
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and int(ya.max()) < 4
        state = a.state_dict()
        want = a.sample_train(16)
        a.load_state_dict(state)
        got = a.sample_train(16)
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
        # held-out images are neither cropped nor flipped: the same images, wherever they live
        on_device = resident.task_images(spec, seed=7)
        for (x1, y1), (x2, y2) in zip(a.iter_eval(50), on_device.iter_eval(50), strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.device.type == DEVICE
    finally:
        for loader in loaders:
            loader.close()


@needs_cuda
def test_streamed_batches_come_through_pinned_memory(npz_spec):
    spec, cache = npz_spec
    loader = TaskLoader("cuda", "stream", data_dir=cache, workers=2)
    try:
        task = loader.task_images(spec, seed=1)
        x, _ = task.sample_train(16)
        assert x.is_cuda
        # the DataLoader the hub started: its batches are pinned by torch's pin-memory thread
        assert loader.hub._iter is not None and loader.hub._iter._pin_memory
    finally:
        loader.close()


def test_streamed_and_resident_training_on_the_device(run_config, tmp_path):
    """The same run with images resident on the device and streamed by 2 workers: both finish and record
    their placement; on the CPU they draw the same batches (same φ), on CUDA the resident sampler draws from
    a CUDA generator (other batches), so their losses are compared only loosely there."""
    base = dict(steps=12, log_every=4, checkpoint_every=12)
    runs = {}
    for placement in ("device", "stream"):
        cfg = run_config(**base, data_placement=placement, stream_workers=2)
        train(cfg, tmp_path / placement)
        lines = assert_trained(tmp_path / placement, cfg, RESOLVED)
        assert all(m["data_placement"] == placement for m in lines)
        runs[placement] = lines
    if not ON_CUDA:
        assert max_abs_diff(phi(tmp_path / "device"), phi(tmp_path / "stream")) == 0.0
    else:
        a, b = runs["device"][-1]["mean_loss"], runs["stream"][-1]["mean_loss"]
        assert 0.5 < a / b < 2.0, (a, b)


def test_auto_placement_streams_past_the_memory_budget(run_config, tmp_path):
    cfg = run_config(steps=4, log_every=4, checkpoint_every=4, data_placement="auto", memory_budget_gb=1e-6)
    train(cfg, tmp_path / "tight")
    assert metrics(tmp_path / "tight")[-1]["data_placement"] == "stream"
    cfg = run_config(steps=4, log_every=4, checkpoint_every=4, data_placement="auto", memory_budget_gb=4.0)
    train(cfg, tmp_path / "roomy")
    assert metrics(tmp_path / "roomy")[-1]["data_placement"] == "device"


def test_a_streamed_run_resumes_on_the_device(run_config, tmp_path):
    cfg = run_config(steps=12, log_every=2, checkpoint_every=6, data_placement="stream", stream_workers=2)
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    train({**cfg, "steps": 6}, tmp_path / "r")
    train(cfg, tmp_path / "r", resume=True)
    assert_resume_matches(phi(tmp_path / "a"), phi(tmp_path / "b"), phi(tmp_path / "r"), "resume_stream")


def test_a_task_pool_on_the_device(make_suite, tiny_config, tmp_path):
    """4 pool tasks, 2 per trajectory, redrawn at every restart; resumed across a redraw."""
    suite = make_suite(n_tasks=4)
    cfg = tiny_config(
        suite, device=DEVICE, steps=16, k=4, log_every=4, checkpoint_every=6, tasks_per_trajectory=2
    )
    train(cfg, tmp_path / "a")
    lines = assert_trained(tmp_path / "a", cfg, RESOLVED)
    assert all(len(m["active_tasks"]) == 2 for m in lines)
    assert len({tuple(m["active_tasks"]) for m in lines}) > 1  # redrawn
    train(cfg, tmp_path / "b")
    train({**cfg, "steps": 6}, tmp_path / "r")
    train(cfg, tmp_path / "r", resume=True)
    resumed = {m["step"]: m["active_tasks"] for m in metrics(tmp_path / "r")}  # + the half run's last step
    assert all(resumed[m["step"]] == m["active_tasks"] for m in lines)
    assert_resume_matches(phi(tmp_path / "a"), phi(tmp_path / "b"), phi(tmp_path / "r"), "resume_pool")
