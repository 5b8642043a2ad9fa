"""ImageTask over a synthetic sampler, alone and inside the core MetaLearner with CTS."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from largemeta.core import FOMAML, SGD, MetaLearner, Reptile, Schedule, ShiftErrorProbe
from largemeta.core.params import clone
from largemeta.errors import UserError
from largemeta.models import BatchSource, ImageTask, init_head
from largemeta.testing import RandomImageSampler, image_problem, make_learner


def test_sampler_protocol_and_state_replays_batches():
    s = RandomImageSampler(12, 4, pool=16, seed=0)
    assert isinstance(s, BatchSource)
    state = s.state_dict()
    x1, y1 = s.sample_train(5)
    s.sample_query(3)  # the query stream does not disturb the training stream
    s.load_state_dict(state)
    x2, y2 = s.sample_train(5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.dtype == torch.float32 and y1.dtype == torch.long and x1.shape == (5, 3, 12, 12)


def test_losses_and_state_dict_round_trip(problem):
    body, phi, tasks, heads = problem
    task = tasks[0]
    params = {**phi, **heads[0]}
    state = task.state_dict()
    a = task.train_loss(params)
    assert int(task.buffers["features.1.num_batches_tracked"]) == 1
    task.load_state_dict(state)
    assert int(task.buffers["features.1.num_batches_tracked"]) == 0
    b = task.train_loss(params)
    torch.testing.assert_close(a, b)  # same batch, same buffers → same loss
    assert torch.isfinite(task.query_loss(params))
    live = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad(task.train_loss(live), list(live.values()))
    named = dict(zip(live, grads, strict=True))
    assert named["head.weight"].abs().sum() > 0 and named["features.0.weight"].abs().sum() > 0


def test_loss_and_accuracy_equal_the_eval_mode_module_and_leave_buffers_alone(problem):
    """The oracle: the body as a plain module holding φ and the task's running statistics, in eval mode."""
    body, phi, tasks, heads = problem
    task, params = tasks[0], {**phi, **heads[0]}
    for _ in range(3):  # running statistics away from their initial (0, 1), so reading them matters
        task.train_loss(params)
    x, y = task.sampler.x, task.sampler.y
    module = copy.deepcopy(body)
    module.load_state_dict({**phi, **task.buffers})
    logits = F.linear(module.eval()(x), heads[0]["head.weight"], heads[0]["head.bias"])
    buffers = clone(task.buffers)
    chunks = [(x[i : i + 10], y[i : i + 10]) for i in range(0, len(x), 10)]  # 64 images in 7 chunks
    result = task.loss_and_accuracy(params, chunks)
    assert set(result) == {"loss", "accuracy"}
    torch.testing.assert_close(torch.tensor(result["loss"]), F.cross_entropy(logits, y), rtol=1e-5, atol=1e-6)
    assert result["accuracy"] == (logits.argmax(1) == y).sum().item() / len(y)
    assert all(torch.equal(buffers[k], task.buffers[k]) for k in buffers)  # eval mode: buffers untouched
    assert all(v != v for v in task.loss_and_accuracy(params, []).values())  # no images: NaN, not 0 %


def test_train_forward_updates_buffers_to_the_hand_computed_running_mean(problem):
    """BatchNorm's update, by hand: running = (1 − 0.1)·running + 0.1·batch statistic (unbiased variance)."""
    body, phi, tasks, heads = problem
    task, params = tasks[0], {**phi, **heads[0]}
    x, y = task.train_batch()
    conv = F.conv2d(x, phi["features.0.weight"], padding=1)  # the first conv has no bias
    with task.static_inputs((x, y)):
        task.train_loss(params)
    torch.testing.assert_close(task.buffers["features.1.running_mean"], 0.1 * conv.mean((0, 2, 3)))
    torch.testing.assert_close(task.buffers["features.1.running_var"], 0.9 + 0.1 * conv.var((0, 2, 3)))
    assert int(task.buffers["features.1.num_batches_tracked"]) == 1
    assert int(tasks[1].buffers["features.1.num_batches_tracked"]) == 0  # another task's buffers: untouched
    task.query_loss(params)  # a query forward is one more minibatch of this task
    assert int(task.buffers["features.1.num_batches_tracked"]) == 2


def test_head_names_do_not_clash_with_body(problem):
    body, phi, tasks, heads = problem
    assert set(heads[0]) == {"head.weight", "head.bias"} and not set(heads[0]) & set(phi)


def test_cts_meta_learner_reduces_image_task_losses():
    """Two tiny tasks, CTS on Reptile with SGD inner steps: training losses go down and φ moves."""
    body, phi, tasks, heads = image_problem(specs=((16, 3), (16, 4)), batch=16, seed=1, width=16)
    phi0 = clone(phi)
    learner = MetaLearner(
        phi, tasks, SGD(0.05, momentum=0.9), Reptile(), Schedule.cts(k=20), private=heads, meta_lr=0.1
    )
    first = torch.stack([t.train_loss({**p}) for t, p in zip(tasks, learner.params, strict=True)]).detach()
    losses = [learner.inner_step() for _ in range(15)]
    last = torch.stack(losses[-3:]).mean(0)
    assert (last < 0.7 * first).all(), (first, last)
    assert any(not torch.equal(phi[k], phi0[k]) for k in phi)
    # heads are private: never reset into φ and still shaped per task
    assert learner.params[0]["head.weight"].shape == (3, 16)
    assert learner.params[1]["head.weight"].shape == (4, 16)


def test_fomaml_uses_query_batches_and_probe_replays():
    # At k = 1 the shifted point θ_1 + Δ and the replay U_1(φ + Δ) differ by α(∇L(φ + Δ) − ∇L(φ)) = O(αβ):
    # with a tiny β the replay (same batch, same head and optimizer state) must land on the shifted point.
    learner = make_learner(meta_gradient=FOMAML(), schedule=Schedule.cts(k=4), meta_lr=1e-5)
    probe = ShiftErrorProbe(learner, task=0, at=[1, 2, 4])
    learner.run(4)
    assert [r["k"] for r in probe.records] == [1, 2, 4]
    assert probe.records[0]["shift_error"] < 1e-3 * probe.records[0]["displacement"]
    assert all(r["displacement"] > 0 for r in probe.records)


def test_image_task_moves_batches_and_buffers_to_its_device():
    """On the meta device (shapes only): a task ignoring ``device`` would hand out the sampler's tensors."""
    body, phi, tasks, heads = image_problem()
    task = ImageTask(body, tasks[0].sampler, classes=5, batch_size=8, device="meta")
    x, y = task.train_batch()
    assert (x.device.type, y.device.type) == ("meta", "meta") and x.shape == (8, 3, 16, 16)
    assert all(v.device.type == "meta" for v in task.buffers.values())
    assert tasks[0].sampler.x.device.type == "cpu"  # the sampler's pool stays where it is
    assert all(v.device.type == "cpu" for v in body.buffers())  # and so does the template
    loss = task.train_loss({k: v.to("meta") for k, v in {**phi, **heads[0]}.items()})
    assert loss.device.type == "meta" and loss.shape == ()
    # without a device, batches stay where the sampler makes them
    plain = ImageTask(body, tasks[0].sampler, classes=5, batch_size=8)
    assert plain.device is None and plain.train_batch()[0].device.type == "cpu"


def test_image_task_refuses_a_bad_device(problem):
    body, _, tasks, _ = problem
    with pytest.raises(UserError, match=r"device 'gpu' is not a torch device \(valid: cpu, cuda"):
        ImageTask(body, tasks[0].sampler, classes=5, batch_size=8, device="gpu")


def test_custom_sampler_protocol():
    class Fixed:
        def __init__(self):
            self.gen = torch.Generator().manual_seed(0)

        def sample_train(self, batch):
            return torch.randn(batch, 3, 16, 16, generator=self.gen), torch.zeros(batch, dtype=torch.long)

        sample_query = sample_train

    body, phi, _, _ = image_problem()
    task = ImageTask(body, Fixed(), classes=2, batch_size=4)
    assert task.state_dict()["sampler"] is None  # a sampler without state: nothing to replay
    assert torch.isfinite(task.train_loss({**phi, **init_head(2, body.num_features)}))


def test_static_inputs_replace_sampling_and_are_restored(problem):
    """Graph capture's contract: inside ``static_inputs`` every loss reads the given tensors (no draws)."""
    body, phi, tasks, heads = problem
    task, params = tasks[0], {**phi, **heads[0]}
    x, y = task.train_batch()
    qx, qy = task.query_batch()
    state = task.sampler.state_dict()
    with task.static_inputs((x, y), (qx, qy)):
        assert task.train_batch()[0] is x and task.query_batch()[1] is qy
        a = task.train_loss(params)
        x.mul_(0)  # refilled in place: the next loss sees the new contents
        b = task.train_loss(params)
    assert not torch.equal(a, b)
    after = task.sampler.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert task.train_batch()[0] is not x  # sampling again outside the context


def test_the_old_name_of_a_batch_source_still_works_with_a_warning():
    import largemeta.models

    with pytest.warns(DeprecationWarning, match="use largemeta.models.BatchSource"):
        assert largemeta.models.BatchSampler is BatchSource
