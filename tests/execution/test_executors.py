"""Every execution option against the plain loop (the oracle), on CPU; graph capture on GPU only."""

from __future__ import annotations

import pytest
import torch

from largemeta.core import FOMAML, IMAML, SGD, Adam, Leap, PreStepFOMAML, Schedule
from largemeta.core.params import flatten
from largemeta.errors import UserError
from largemeta.execution import EXECUTORS, Autocast, Batched, ChannelsLast, CudaGraphMetaStep, loop_gradients
from largemeta.testing import make_learner

STEPS = 6  # crosses a restart (K = 4) and runs CTS meta-updates + shifts every step

# The paper's inner SGD and meta step sizes; bf16 rounding grows chaotically under larger steps on these
# tiny random-label problems (lr 0.05, β 0.1, batch 8: 7 % loss gaps by step 3), so autocast is checked here.
PAPER_HPARAMS = dict(inner=SGD(0.01, momentum=0.9, weight_decay=5e-4), meta_lr=0.01, batch=16)


def run_pair(executor, steps=STEPS, **kw):
    """The same problem (same seeds) run by the plain loop and by ``executor``: per-step losses and
    learners."""
    ref, fast = make_learner(loop_gradients, **kw), make_learner(executor, **kw)
    ref_losses = torch.stack([ref.inner_step() for _ in range(steps)])
    fast_losses = torch.stack([fast.inner_step() for _ in range(steps)])
    return ref, fast, ref_losses, fast_losses


def assert_learners_close(ref, fast, rtol, atol):
    for k in ref.phi:
        torch.testing.assert_close(fast.phi[k], ref.phi[k], rtol=rtol, atol=atol, msg=k)
    for t in range(len(ref.tasks)):
        for k in ref.params[t]:
            torch.testing.assert_close(fast.params[t][k], ref.params[t][k], rtol=rtol, atol=atol)
        for k in ref.tasks[t].buffers:
            fast_buffer, ref_buffer = fast.tasks[t].buffers[k], ref.tasks[t].buffers[k]
            torch.testing.assert_close(fast_buffer, ref_buffer, rtol=rtol, atol=atol)


@pytest.mark.slow
def test_channels_last_matches_loop_in_fp32():
    ref, fast, ref_losses, fast_losses = run_pair(ChannelsLast())
    # Same arithmetic, different kernels: fp32 rounding only.
    torch.testing.assert_close(fast_losses, ref_losses, rtol=1e-4, atol=1e-5)
    assert_learners_close(ref, fast, rtol=1e-4, atol=1e-5)
    conv = fast.phi["features.0.weight"]
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert fast.params[1]["features.4.weight"].is_contiguous(memory_format=torch.channels_last)
    assert (
        fast.controller.outer.param_groups[0]["params"][0] is conv
    )  # converted in place: the optimizer still sees φ
    assert fast.tasks[0].train_batch()[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_autocast_bf16_close_to_fp32_loop():
    ref, fast, ref_losses, fast_losses = run_pair(Autocast("bf16"), **PAPER_HPARAMS)
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ≈ 2e-3 per op); with the paper's step sizes the
    # losses of 6 steps (CTS meta-update + shift after each, a restart after the 4th) stay within 5e-2
    # relative of the fp32 loop (measured: ≤ 1.4e-2); parameters, φ and the losses themselves stay fp32.
    torch.testing.assert_close(fast_losses, ref_losses, rtol=5e-2, atol=0)
    assert all(v.dtype == torch.float32 for v in fast.phi.values())
    assert fast_losses.dtype == torch.float32
    # φ's displacement: bf16 task gradients point ~1–2 % off (measured cosine 0.98), so its direction agrees
    # to cosine > 0.95 and its length to 10 %.
    start = flatten(make_learner(**PAPER_HPARAMS).phi)
    moved_ref, moved_fast = flatten(ref.phi) - start, flatten(fast.phi) - start
    assert torch.nn.functional.cosine_similarity(moved_ref, moved_fast, dim=0) > 0.95
    assert abs(moved_fast.norm() / moved_ref.norm() - 1) < 0.1


@pytest.mark.slow
def test_channels_last_plus_autocast_close_to_loop():
    ref, fast, ref_losses, fast_losses = run_pair(Autocast(inner=ChannelsLast()), **PAPER_HPARAMS)
    torch.testing.assert_close(fast_losses, ref_losses, rtol=5e-2, atol=0)


def test_autocast_refuses_float16():
    with pytest.raises(UserError, match="loss scaling"):
        Autocast(torch.float16)
    with pytest.raises(UserError, match="unknown autocast dtype 'fp8'"):
        Autocast("fp8")


def test_batched_matches_loop_including_batchnorm_buffers():
    # tasks 0 and 1 share shapes (one vmapped group); task 2 has another size and head: the plain step.
    ref, fast, ref_losses, fast_losses = run_pair(Batched())
    # vmap turns per-task convolutions into grouped ones (other summation order): fp32 rounding only.
    torch.testing.assert_close(fast_losses, ref_losses, rtol=1e-4, atol=1e-5)
    assert_learners_close(ref, fast, rtol=1e-4, atol=1e-5)
    assert int(fast.tasks[0].buffers["features.1.num_batches_tracked"]) == STEPS


def test_batched_groups_only_same_shapes():
    learner = make_learner(Batched())
    batches = {t: task.train_batch() for t, task in enumerate(learner.tasks)}
    keys = [Batched._key(learner, t, batches[t]) for t in range(3)]
    assert keys[0] == keys[1] and keys[0] != keys[2]


@pytest.mark.slow
@pytest.mark.parametrize(
    "meta_gradient, schedule",
    [
        (Leap(), Schedule.cts(k=4)),  # observes every step (losses and gradients)
        # adds a proximal regularizer to the inner loss; K > steps because the conjugate-gradient solve of the
        # meta-update amplifies fp32 rounding differences beyond any executor's control
        (IMAML(proximal=True), Schedule.plain(k=10)),
        # meta-updates between the gradients and the inner steps: every task's gradients held at once
        (PreStepFOMAML(), Schedule.cts(k=4)),
    ],
)
def test_batched_matches_loop_for_stateful_meta_gradients(meta_gradient, schedule):
    kw = dict(schedule=schedule, specs=((16, 5), (16, 5)))
    ref = make_learner(loop_gradients, meta_gradient=meta_gradient, **kw)
    fast = make_learner(Batched(), meta_gradient=type(meta_gradient)(**_options(meta_gradient)), **kw)
    for _ in range(STEPS):
        torch.testing.assert_close(fast.inner_step(), ref.inner_step(), rtol=1e-4, atol=1e-5)
    assert_learners_close(ref, fast, rtol=1e-4, atol=1e-4)


def _options(mg):
    return {"proximal": mg.proximal} if isinstance(mg, IMAML) else {}


@pytest.mark.slow
def test_batched_with_adam_inner_optimizer():
    ref, fast, ref_losses, fast_losses = run_pair(Batched(), inner=Adam(1e-3))
    torch.testing.assert_close(fast_losses, ref_losses, rtol=1e-4, atol=1e-5)
    assert_learners_close(ref, fast, rtol=1e-3, atol=1e-5)


def test_executors_by_name():
    assert EXECUTORS.create("loop") is loop_gradients
    both = EXECUTORS.create("channels_last+autocast")
    assert isinstance(both, Autocast) and isinstance(both.inner, ChannelsLast)
    assert EXECUTORS.create("batched") is not EXECUTORS.create("batched")  # fresh state for every learner
    with pytest.raises(UserError, match=r"unknown executor 'vmap' \(valid: autocast, batched, channels_last"):
        EXECUTORS.create("vmap")


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(inner=Adam(1e-3)), "SGD inner optimizer, got Adam: its bias correction uses the step count"),
        (dict(meta_gradient=Leap()), "'leap' meta-gradient: it reads host-side floats"),
        (dict(meta_gradient=IMAML(), schedule=Schedule.plain(4)), "'imaml' meta-gradient"),
    ],
)
def test_cuda_graph_refuses_unsupported_settings(kw, message):
    with pytest.raises(UserError, match=message):
        CudaGraphMetaStep(make_learner(**kw))


def test_cuda_graph_refuses_outer_optimizer_other_than_sgd():
    learner = make_learner()
    learner.controller.outer = torch.optim.Adam(list(learner.phi.values()))
    with pytest.raises(UserError, match="torch.optim.SGD as the outer optimizer, got Adam"):
        CudaGraphMetaStep(learner)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_cuda_graph_refuses_on_cpu():
    with pytest.raises(UserError, match="needs a CUDA device"):
        CudaGraphMetaStep(make_learner())


@pytest.mark.gpu
@pytest.mark.parametrize("schedule", [Schedule.cts(k=4), Schedule.plain(k=3)])
@pytest.mark.parametrize("executor", ["loop", "channels_last+autocast"])
def test_cuda_graph_meta_step_matches_eager_loop(schedule, executor):
    """Graph replay vs the eager loop over restarts, meta-updates (every step for CTS, every K for plain)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    steps = 10
    kw = dict(device="cuda", schedule=schedule, inner=SGD(0.05, momentum=0.9, weight_decay=5e-4))
    ref = make_learner(EXECUTORS.create(executor), **kw)
    fast = make_learner(EXECUTORS.create(executor), **kw)
    graph = CudaGraphMetaStep(fast, warmup=2)
    for _ in range(steps):
        torch.testing.assert_close(graph(), ref.inner_step(), rtol=1e-3, atol=1e-4)
    assert graph._graphs  # replays happened
    assert fast.step == ref.step == steps
    assert [s["step"] for s in fast.runner.inner_states] == [s["step"] for s in ref.runner.inner_states]
    tol = dict(rtol=1e-3, atol=1e-4) if executor == "loop" else dict(rtol=3e-2, atol=3e-3)
    assert_learners_close(ref, fast, **tol)


@pytest.mark.gpu
def test_cuda_graph_fomaml_matches_eager_loop():
    """FOMAML's meta-gradient draws query batches: the graph reads them from static query tensors."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ref = make_learner(device="cuda", meta_gradient=FOMAML())
    fast = make_learner(device="cuda", meta_gradient=FOMAML())
    graph = CudaGraphMetaStep(fast, warmup=1)
    for _ in range(6):
        torch.testing.assert_close(graph(), ref.inner_step(), rtol=1e-3, atol=1e-4)
    assert graph._graphs
    assert_learners_close(ref, fast, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("executor", [ChannelsLast(), Batched()], ids=["channels_last", "batched"])
def test_resnet20_fast_paths_match_loop(executor):
    """ResNet-20's zero-pad shortcuts (strided slicing, channel padding) under NHWC and under vmap."""
    # The paper's step sizes: with lr 0.05 and BatchNorm over 4 images, fp32 rounding differences of the NHWC
    # kernels grew to 1e-3 in 3 steps (and depended on the thread count); here they stay ≤ 1.2e-5.
    kw = dict(model="resnet20", specs=((16, 4), (16, 4)), **PAPER_HPARAMS)
    ref, fast, ref_losses, fast_losses = run_pair(executor, steps=3, **kw)
    torch.testing.assert_close(fast_losses, ref_losses, rtol=1e-4, atol=1e-5)
    assert_learners_close(ref, fast, rtol=1e-3, atol=5e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["channels_last", "batched", "autocast", "channels_last+autocast"])
def test_fast_paths_on_gpu_match_loop(name):
    """The CPU oracles again on CUDA (cuDNN kernels; vmap's batching rule for BatchNorm with batched
    buffers)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    bf16 = "autocast" in name
    kw = dict(device="cuda", **(PAPER_HPARAMS if bf16 else {}))
    ref, fast, ref_losses, fast_losses = run_pair(EXECUTORS.create(name), **kw)
    torch.testing.assert_close(fast_losses, ref_losses, rtol=5e-2 if bf16 else 1e-4, atol=0 if bf16 else 1e-5)
    if not bf16:
        assert_learners_close(ref, fast, rtol=1e-3, atol=1e-4)


class _EmulatedGraph:
    """A CPU stand-in for ``torch.cuda.CUDAGraph`` that keeps the semantics the wrapper relies on: capture
    runs nothing and returns a static output; each replay runs the recorded tensor work again and writes the
    static output, while Python-side effects (the inner optimizers' step counters) are not repeated."""

    instances: list[_EmulatedGraph] = []

    def __init__(self) -> None:
        self.fn, self.out, self.learner = None, None, None
        _EmulatedGraph.instances.append(self)

    def replay(self) -> None:
        states = self.learner.runner.inner_states
        steps = [s["step"] for s in states]
        self.out.copy_(self.fn())
        for s, n in zip(states, steps, strict=True):
            s["step"] = n


@pytest.fixture
def emulated_cuda(monkeypatch):
    """Runs CudaGraphMetaStep's bookkeeping on CPU: streams are no-ops, graphs are :class:`_EmulatedGraph`."""
    import contextlib
    import types

    import largemeta.execution.cuda_graph as execution

    _EmulatedGraph.instances = []
    current: dict[str, object] = {}

    def capture(graph, fn):
        graph.fn, graph.learner = fn, current["learner"]
        graph.out = torch.empty(len(current["learner"].tasks))
        return graph.out

    monkeypatch.setattr(execution, "_capture_graph", capture)
    monkeypatch.setattr(execution, "_check_device", lambda learner: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _EmulatedGraph)
    stream = types.SimpleNamespace(wait_stream=lambda other: None)
    monkeypatch.setattr(torch.cuda, "Stream", lambda: stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: stream)
    return current


@pytest.mark.slow
@pytest.mark.parametrize("case", ["cts", "plain", "fomaml", "reset_inner_state", "fomaml-official"])
def test_cuda_graph_bookkeeping_matches_eager_loop_emulated(emulated_cuda, case):
    """On CPU with an emulated graph: the wrapper's schedule logic (which graph, static inputs, step counters,
    hooks, restarts, recapture when tensors are replaced) gives exactly the eager loop's run."""
    from largemeta.core import ShiftErrorProbe

    kw = {
        "cts": dict(schedule=Schedule.cts(k=4)),
        "plain": dict(schedule=Schedule.plain(k=3)),
        "fomaml": dict(schedule=Schedule.cts(k=4), meta_gradient=FOMAML()),
        "reset_inner_state": dict(schedule=Schedule.cts(k=4)),
        "fomaml-official": dict(schedule=Schedule.cts(k=4), meta_gradient=PreStepFOMAML()),
    }[case]
    reset = case == "reset_inner_state"
    ref, fast = make_learner(reset_inner_state=reset, **kw), make_learner(reset_inner_state=reset, **kw)
    probes = [ShiftErrorProbe(lr, task=0, at=[2, 3]) for lr in (ref, fast)]
    emulated_cuda["learner"] = fast
    graph = CudaGraphMetaStep(fast, warmup=2)
    for _ in range(10):
        torch.testing.assert_close(graph(), ref.inner_step(), rtol=0, atol=0)
    assert_learners_close(ref, fast, rtol=0, atol=0)
    assert fast.step == ref.step == 10
    assert [s["step"] for s in fast.runner.inner_states] == [s["step"] for s in ref.runner.inner_states]
    assert probes[0].records == probes[1].records  # on_step hooks ran after every replayed step
    captured = len(_EmulatedGraph.instances)
    # cts/fomaml: one graph (a meta-update every step); plain: with and without a meta-update; a reset inner
    # state re-creates the momentum buffers at each restart (steps 4, 8): the step after runs eagerly, the
    # next one recaptures.
    assert captured == {"cts": 1, "fomaml": 1, "plain": 2, "reset_inner_state": 3, "fomaml-official": 1}[case]
