"""Every executor and the CUDA-graph meta-step against the eager loop on the test device, at the paper's
model (ResNet-20, tasks of different sizes) and across the events that make a graph capture again."""

from __future__ import annotations

import pytest
import torch
from gpu_device import DEVICE, needs_cuda, record

from largemeta.core import FOMAML, SGD, Schedule
from largemeta.execution import EXECUTORS, CudaGraphMetaStep
from largemeta.testing import make_learner

pytestmark = pytest.mark.gpu

PAPER = dict(inner=SGD(0.01, momentum=0.9, weight_decay=5e-4), meta_lr=0.01, batch=16)
RESNET = dict(model="resnet20", specs=((16, 4), (20, 3)))


def assert_close_learners(ref, fast, rtol, atol, theta_atol=None):
    for k in ref.phi:
        torch.testing.assert_close(fast.phi[k], ref.phi[k], rtol=rtol, atol=atol, msg=k)
    for t in range(len(ref.tasks)):
        for k in ref.params[t]:
            torch.testing.assert_close(
                fast.params[t][k], ref.params[t][k], rtol=rtol, atol=theta_atol or atol, msg=k
            )


@pytest.mark.parametrize("name", ["channels_last", "batched", "autocast", "channels_last+autocast"])
def test_every_executor_on_resnet20_matches_the_loop(name):
    """ResNet-20 (zero-pad shortcuts), two tasks of different image sizes, 6 CTS steps across a restart."""
    if name == "batched":  # vmap stacks tasks of one shape
        kw = dict(model="resnet20", specs=((16, 4), (16, 4)), device=DEVICE, **PAPER)
    else:
        kw = dict(**RESNET, device=DEVICE, **PAPER)
    ref, fast = make_learner(**kw), make_learner(EXECUTORS.create(name), **kw)
    ref_losses = torch.stack([ref.inner_step() for _ in range(6)])
    fast_losses = torch.stack([fast.inner_step() for _ in range(6)])
    bf16 = "autocast" in name
    torch.testing.assert_close(fast_losses, ref_losses, rtol=5e-2 if bf16 else 1e-4, atol=0 if bf16 else 1e-5)
    if not bf16:
        # fp32 rounding of other kernels, grown through BatchNorm over 16 images: on the CPU after 6 steps
        # θ differs by up to 5.5e-4 under channels-last (measured), φ (averaged by the meta-updates) by 7e-6
        assert_close_learners(ref, fast, rtol=1e-3, atol=1e-4, theta_atol=2e-3)
    assert all(v.device.type == DEVICE for v in fast.phi.values())


@needs_cuda
@pytest.mark.parametrize("schedule", ["cts", "plain", "fomaml"])
def test_the_cuda_graph_on_resnet20_matches_the_eager_loop(schedule):
    kw = dict(**RESNET, device="cuda", **PAPER)
    if schedule == "plain":
        kw["schedule"] = Schedule.plain(k=3)
    if schedule == "fomaml":
        kw["meta_gradient"] = FOMAML()
    ref, fast = make_learner(**kw), make_learner(**kw)
    graph = CudaGraphMetaStep(fast, warmup=2)
    for _ in range(9):
        torch.testing.assert_close(graph(), ref.inner_step(), rtol=1e-3, atol=1e-4)
    assert graph._graphs and fast.step == ref.step == 9
    assert_close_learners(ref, fast, rtol=1e-3, atol=1e-4, theta_atol=1e-3)


@needs_cuda
def test_the_cuda_graph_captures_again_after_restarts_that_reset_the_inner_state():
    """reset_inner_state re-creates the momentum buffers at every restart (K = 3): the step after each restart
    runs eagerly (it creates them), the graphs are captured again wherever the new buffers live elsewhere,
    and every replay still equals the eager loop."""
    kw = dict(device="cuda", reset_inner_state=True, schedule=Schedule.cts(k=3))
    ref, fast = make_learner(**kw), make_learner(**kw)
    graph = CudaGraphMetaStep(fast, warmup=1)
    for _ in range(10):
        torch.testing.assert_close(graph(), ref.inner_step(), rtol=1e-3, atol=1e-4)
    assert graph._eager_steps == 1 + 3  # the warm-up, then the first step of each of 3 new trajectories
    assert graph._graphs  # and replays in between
    assert_close_learners(ref, fast, rtol=1e-3, atol=1e-4)


@needs_cuda
def test_the_cuda_graph_captures_again_after_load_state_dict():
    """A learner restored from another's state mid-run (what --resume does) replays the same steps."""
    ref, fast = make_learner(device="cuda"), make_learner(device="cuda")
    graph = CudaGraphMetaStep(fast, warmup=1)
    for _ in range(5):
        graph(), ref.inner_step()
    before = graph._fingerprint
    fast.load_state_dict(ref.state_dict())
    for _ in range(5):
        torch.testing.assert_close(graph(), ref.inner_step(), rtol=1e-3, atol=1e-4)
    assert graph._fingerprint != before
    assert_close_learners(ref, fast, rtol=1e-3, atol=1e-4)


@needs_cuda
def test_the_cuda_graph_is_faster_than_the_eager_loop_at_small_sizes():
    """Launch-bound sizes (the tiny ConvNet): replaying one graph must beat launching each kernel; the
    times are recorded (graph_vs_eager.json)."""
    import time

    ref, fast = make_learner(device="cuda"), make_learner(device="cuda")
    graph = CudaGraphMetaStep(fast, warmup=2)
    timings = {}
    for name, step in (("eager", ref.inner_step), ("graph", graph)):
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(30):
            step()
        torch.cuda.synchronize()
        timings[name] = 1e3 * (time.perf_counter() - start) / 30
    record("graph_vs_eager_tiny", {"ms_per_step": timings})
    assert timings["graph"] < timings["eager"], timings
