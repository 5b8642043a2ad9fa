"""The paper's meta-test protocol: how good is an initialization on tasks it has never seen?

For each target task and seed: a fresh head, fresh BatchNorm statistics, then fine-tune *all* weights from φ
with Adam (lr 1e-3, weight decay 5e-4, batch 128), multiplying the learning rate by 0.3 at 40 %, 70 % and 90 %
of the N steps; test accuracy is measured at N/5, 2N/5, …, N. Reported: per-seed accuracies, their mean and
the half-width of a 95 % Student-t interval over seeds (:mod:`largemeta.stats`).

A target's images are on the device or streamed from disk (``data_placement``, as in training:
:mod:`largemeta.data.tasks.loader`); one target is resident at a time, and on a CPU both give the same
batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from largemeta import console
from largemeta.core.params import Params
from largemeta.data.tasks.images import TaskImages, task_seed
from largemeta.data.tasks.loader import TaskLoader, check_options
from largemeta.data.tasks.suite import TaskSpec
from largemeta.errors import UserError
from largemeta.models import create_model, feature_size, init_head, is_code_reference, split_state
from largemeta.models.functional import apply
from largemeta.models.task import ImageTask, draws_random_numbers
from largemeta.phi import fit_to_body, load_weights
from largemeta.stats import ci95

LR_DROPS = (0.4, 0.7, 0.9)
"""Fractions of the fine-tuning steps after which the learning rate is multiplied by 0.3."""
FINE_TUNING = (
    "every weight from φ, a fresh head and BatchNorm statistics; Adam lr 1e-3, weight decay 5e-4, lr x0.3 "
    f"after {', '.join(f'{100 * f:.0f} %' for f in LR_DROPS)} of the steps; the same target images, "
    "subsets, batches and head per (target, seed) for every initialization"
)
"""How each (target, seed) is fine-tuned, as results files record it (``protocol.fine_tuning``)."""


@dataclass(frozen=True)
class Init:
    """A starting point: φ (None = the body's random init) and the body it belongs to.

    ``model_options`` are what is known about the body (``in_channels``, and ``width`` when one is known); the
    model's factory takes those it uses.
    """

    name: str
    model: str
    model_options: dict[str, Any]
    phi: Params | None
    seed: int = 0

    @property
    def in_channels(self) -> int:
        return int(self.model_options["in_channels"])


def scratch(model: str, in_channels: int, width: int | None = None) -> Init:
    """A random initialization of ``model`` (the scratch baseline)."""
    return Init("scratch", model, {"in_channels": in_channels, **({"width": width} if width else {})}, None)


def load_init(source: str, *, model: str | None = None, width: int | None = None, channels: int = 1) -> Init:
    """``scratch``, a run folder (its checkpoint's φ) or a ``.safetensors`` file written by ``largemeta
    export``."""
    if source == "scratch":
        return scratch(model or "convnet", channels, width)
    path = Path(source)
    if not (path.is_dir() or (path.suffix == ".safetensors" and path.is_file())):
        raise UserError(f"--init {source!r} is not 'scratch', a run folder or an existing .safetensors file")
    weights = load_weights(source)
    if model is None and not weights.model:
        raise UserError(
            f"--init {source!r} does not name its body (saved by the drop-in API without body=); pass --model"
        )
    if model is None and is_code_reference(weights.model):
        # naming the body's code in a file must not be enough to run it: the checkpoint itself runs no code
        raise UserError(
            f"--init {source!r} names model code {weights.model!r}; pass --model "
            f"{weights.model} to import and run it"
        )
    width = width or weights.config.get("width")
    options = {"in_channels": weights.in_channels or channels, **({"width": width} if width else {})}
    return Init(str(source), model or weights.model, options, weights.phi, int(weights.config.get("seed", 0)))


def check_image_size(body: torch.nn.Module, channels: int, image_size: int, what: str) -> None:
    """A one-line error unless ``body`` takes images of ``channels`` × ``image_size`` px (one forward pass of
    two zero images, in eval mode: nothing is updated)."""
    was = body.training
    body.eval()
    device = next((p.device for p in body.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            body(torch.zeros(2, channels, image_size, image_size, device=device))
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{what}: the body cannot take {image_size}x{image_size} px images ({first}); "
            "use a larger image size"
        ) from None
    finally:
        body.train(was)


def check_init(init: Init, specs: list[TaskSpec]) -> None:
    """A one-line error unless ``init``'s body builds, takes every target's images and φ fits it (the random
    stream is left where it was)."""
    with torch.random.fork_rng(devices=[]):
        body = create_model(init.model, **init.model_options)
        if init.phi is not None:
            fit_to_body(init.phi, split_state(body)[0], what=f"init {init.name!r}", model=init.model)
    for size, channels in dict.fromkeys((s.image_size, s.channels) for s in specs):
        check_image_size(body, channels, size, f"init {init.name!r} ({init.model})")


def body_and_phi(init: Init, seed: int) -> tuple[torch.nn.Module, Params, Params]:
    """The body template, φ for it (checked against its shapes), and fresh BatchNorm buffers."""
    torch.manual_seed(seed)
    body = create_model(init.model, **init.model_options)
    params, buffers = split_state(body)
    if init.phi is None:
        return body, params, buffers
    return body, fit_to_body(init.phi, params, what=f"init {init.name!r}", model=init.model), buffers


def fine_tune_optimizer(
    params: list[Tensor], steps: int, lr: float = 1e-3, weight_decay: float = 5e-4
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.MultiStepLR]:
    """The protocol's Adam and its schedule: lr × 0.3 after each of 40 %, 70 %, 90 % of ``steps``."""
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    milestones = [int(round(f * steps)) for f in LR_DROPS]
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.3)


class _TargetSampler:
    def __init__(self, data: TaskImages) -> None:
        self.data = data

    def sample_train(self, batch: int):
        return self.data.sample_train(batch)

    sample_query = sample_train


def fine_tune(
    init: Init,
    data: TaskImages,
    *,
    steps: int,
    seed: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    device: torch.device | str = "cpu",
    curve_points: int = 5,
    on_step: Callable[[Tensor], None] | None = None,
) -> dict[int, float]:
    """Fine-tune φ on one target with the protocol; returns test accuracy at every steps/curve_points.
    ``on_step`` hears each step's training loss."""
    body, phi, buffers = body_and_phi(init, seed)  # the seed only matters for a scratch init
    device = torch.device(device)
    task = ImageTask(
        body,
        _TargetSampler(data),
        classes=data.num_classes,
        batch_size=batch_size,
        buffers=buffers,
        device=device,
        name=data.name,
    )
    features = feature_size(body, data.spec.channels, data.spec.image_size)
    head = init_head(data.num_classes, features, torch.Generator().manual_seed(seed))
    params = {k: v.to(device).requires_grad_(True) for k, v in {**phi, **head}.items()}
    optimizer, schedule = fine_tune_optimizer(list(params.values()), steps, lr, weight_decay)
    marks = {max(1, round(steps * i / curve_points)) for i in range(1, curve_points + 1)}
    curve = {}
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = task.train_loss(params)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(loss.detach())
        schedule.step()
        if step + 1 in marks:
            curve[step + 1] = task.loss_and_accuracy(params, data.iter_eval(512))["accuracy"]
    return curve


def meta_test(
    init: Init,
    specs: list[TaskSpec],
    *,
    steps: int = 1000,
    seeds: int = 3,
    batch_size: int = 128,
    train_size: int | None = None,
    device: str | torch.device = "cpu",
    data_dir: str | None = None,
    data_placement: str = "auto",
    memory_budget_gb: float = 0.0,
    stream_workers: int = 0,
    log: Callable[[str], None] | None = None,
    together: bool | None = None,
) -> dict[str, Any]:
    """The protocol over every target and seed; the JSON-ready result. ``data_placement``,
    ``memory_budget_gb`` and ``stream_workers`` mean what the training config's keys of those names mean;
    ``log`` hears which placement ``auto`` chose when it streams. ``together``: True: the seeds of every
    target, and the targets of one shape, are fine-tuned in one batched run
    (:func:`fine_tune_together`, equal to the one-at-a-time loop to float
    tolerance); False: one (target, seed) at a time, the oracle; None: batched on an accelerator, one at a
    time on a CPU (where the batched run measured slower)."""
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    check_options(data_placement, memory_budget_gb, stream_workers)
    check_init(init, specs)
    device = torch.device(device)
    progress = console.Progress("fine-tuning step", len(specs) * seeds * steps, every=steps)

    def on_step(loss: Tensor) -> None:
        progress.update(progress.done + 1, float(loss))

    if together is None:
        together = device.type != "cpu"
    together = together and can_batch(init)
    loader = TaskLoader(
        device,
        data_placement,
        specs=specs,
        at_once=len(specs) if together else 1,
        memory_budget_gb=memory_budget_gb,
        data_dir=data_dir,
        workers=stream_workers,
    )
    try:
        if log is not None and loader.data_placement == "stream" and loader.why:
            log(loader.why)
        if together:
            results = meta_test_together(
                init, loader, specs, steps, seeds, batch_size, train_size, device, on_step
            )
        else:
            results = {
                spec.name: _one_target(
                    init, loader, spec, i, steps, seeds, batch_size, train_size, device, on_step
                )
                for i, spec in enumerate(specs)
            }
    finally:
        loader.close()
        progress.close()
    overall = sum(r["mean_accuracy"] for r in results.values()) / len(results)
    return {
        "init": init.name,
        "steps": steps,
        "seeds": seeds,
        "train_size": train_size,
        "tasks": results,
        "mean_accuracy": overall,
    }


def _one_target(
    init: Init,
    loader: TaskLoader,
    spec: TaskSpec,
    i: int,
    steps: int,
    seeds: int,
    batch_size: int,
    train_size: int | None,
    device: torch.device,
    on_step: Callable[[Tensor], None] | None = None,
) -> dict[str, Any]:
    """Target ``i`` fine-tuned under every seed: mean, interval, per-seed accuracies, the mean curve."""
    per_seed, curves = [], []
    for s in range(seeds):
        data, target = target_images(loader, spec, i, s, train_size)
        try:
            curve = fine_tune(
                init,
                target,
                steps=steps,
                seed=task_seed(1000 + s, i),
                batch_size=batch_size,
                device=device,
                on_step=on_step,
            )
        finally:
            if target is not data:
                target.close()
            data.close()
        curves.append(curve)
        per_seed.append(curve[steps])
    return summary(per_seed, curves)


def target_images(
    loader: TaskLoader, spec: TaskSpec, i: int, s: int, train_size: int | None
) -> tuple[TaskImages, TaskImages]:
    """Target ``i``'s images for fine-tuning seed ``s``: (as loaded, as fine-tuned on: sub-sampled to
    ``train_size`` when given); the caller closes both. No test image is one line."""
    data = loader.task_images(spec, seed=task_seed(s, i))
    if data.num_eval == 0:
        data.close()
        raise UserError(
            f"target {spec.name!r} has no test images (its {spec.eval_split!r} split is empty): "
            "nothing to measure accuracy on"
        )
    if train_size is None:
        return data, data
    try:
        return data, data.subsample(total=train_size, seed=s)
    except BaseException:
        data.close()
        raise


def summary(per_seed: list[float], curves: list[dict[int, float]]) -> dict[str, Any]:
    """A target's entry from its per-seed final accuracies and curves."""
    return {
        "mean_accuracy": sum(per_seed) / len(per_seed),
        "ci95": ci95(per_seed),
        "per_seed": per_seed,
        "curve": {str(k): sum(c[k] for c in curves) / len(curves) for k in curves[0]},
    }


# Batched fine-tuning ---------------------------------------------------------------------------------------
# The meta-test protocol run for many (target, seed) members at once: one vmapped model instead of a loop.
#
# fine_tune fine-tunes one (target, seed) at a time; a meta-test repeats it for every target and seed with
# the same body. Here the members that share a shape (head width, image shape) are fine-tuned *together*:
# their parameters, Adam states and BatchNorm buffers are stacked along a new leading dimension and one
# ``torch.func.vmap``-ed loss gives every member its gradient (the members are independent, so the gradient
# of the sum of their losses with respect to the stack is the stack of their own gradients).
#
# What each member sees is what it sees alone, so the two agree to float tolerance (``tests/metatest/
# test_metatest_batched.py`` checks it against the one-at-a-time loop, which stays the oracle):
#
# * φ and BatchNorm buffers: body_and_phi with the member's seed (so scratch members get the same random
#   bodies); the head from the member's own generator, as alone.
# * data: each member keeps its own :class:`~largemeta.data.tasks.images.TaskImages` and seeded sampler;
#   at every step each member's sampler draws one batch, as it does alone (the samplers' generators are
#   their own, so the order in which members draw does not matter).
# * BatchNorm: the stacked running statistics are vmapped inputs, so each member's slice is updated in place
#   with its own batch statistics; evaluation normalizes each member with its own.
# * the optimizer: Adam and its schedule are element-wise, so one Adam over the stacked tensors is each
#   member's Adam.
#
# Not bitwise: a vmapped convolution is a grouped one, whose reductions may round differently.
#
# Where it pays: vmap turns the members' convolutions into grouped ones, which CPU kernels run no faster
# than the loop (``benchmarks/metatest_batched.py --steps 20 --threads 1`` on this project's shared 2-core
# CPU: 0.70× the loop's speed for the demo's 3 targets × 3 seeds, 35 classes, batch 64, width 16); so
# meta_test batches by default only on an accelerator (``together=None``).
#
# Bodies that draw random numbers (Dropout) are fine-tuned one at a time (their masks come from the global
# generator in the loop's order).

EVAL_BATCH = 512
"""Images per evaluation forward (as :func:`largemeta.metatest.fine_tune`)."""


def shape_of(data: TaskImages) -> tuple:
    """What members must share to be fine-tuned together: head width and image shape."""
    return (data.num_classes, data.image_shape)


def can_batch(init, seed: int = 0) -> bool:
    """Whether ``init``'s body may be fine-tuned batched (it draws no random numbers)."""
    with torch.random.fork_rng(devices=[]):
        body, _, _ = body_and_phi(init, seed)
    return not draws_random_numbers(body)


def fine_tune_together(
    init,
    members: Sequence[tuple[TaskImages, int]],
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    device: torch.device | str = "cpu",
    curve_points: int = 5,
    on_step: Callable[[Tensor], None] | None = None,
) -> list[dict[int, float]]:
    """Fine-tune φ of ``init`` on every ``(target images, seed)`` member at once with the protocol of
    :func:`largemeta.metatest.fine_tune`; returns each member's test accuracy at every steps/curve_points,
    in the members' order. The members must share :func:`shape_of`. ``on_step`` hears every member's
    training loss at every step."""
    if not members:
        return []
    shapes = {shape_of(d) for d, _ in members}
    if len(shapes) > 1:
        raise ValueError(f"members of different shapes cannot be fine-tuned together: {sorted(shapes)}")
    device = torch.device(device)
    template, per_params, per_buffers = None, [], []
    for data, seed in members:
        body, phi, buffers = body_and_phi(init, seed)
        if template is None:
            template = body
            if draws_random_numbers(body):
                raise ValueError("a body that draws random numbers (Dropout) is fine-tuned one at a time")
        features = feature_size(body, data.spec.channels, data.spec.image_size)
        head = init_head(data.num_classes, features, torch.Generator().manual_seed(seed))
        per_params.append({**phi, **head})
        per_buffers.append(buffers)
    params = {
        k: torch.stack([p[k].to(device) for p in per_params]).requires_grad_(True) for k in per_params[0]
    }
    buffers = {k: torch.stack([b[k].to(device) for b in per_buffers]) for k in per_buffers[0]}
    optimizer, schedule = fine_tune_optimizer(list(params.values()), steps, lr, weight_decay)

    def member_loss(p, b, x, y):
        return F.cross_entropy(apply(template, p, b, x, train=True), y)

    batched_loss = vmap(member_loss)
    marks = {max(1, round(steps * i / curve_points)) for i in range(1, curve_points + 1)}
    curves: list[dict[int, float]] = [{} for _ in members]
    for step in range(steps):
        drawn = [data.sample_train(batch_size) for data, _ in members]
        x = torch.stack([b[0].to(device) for b in drawn])
        y = torch.stack([b[1].to(device) for b in drawn])
        optimizer.zero_grad(set_to_none=True)
        losses = batched_loss(params, buffers, x, y)
        losses.sum().backward()
        optimizer.step()
        if on_step is not None:
            for loss in losses.detach():
                on_step(loss)
        schedule.step()
        if step + 1 in marks:
            for j, accuracy in enumerate(_accuracies(template, params, buffers, members, device)):
                curves[j][step + 1] = accuracy
    return curves


@torch.no_grad()
def _accuracies(template, params, buffers, members, device) -> list[float]:
    """Each member's accuracy on its test images, in eval mode with its own BatchNorm statistics: one member
    at a time (a vmapped evaluation measured 2× slower than this loop on a CPU: 9 members, 512 images of
    28 px, ConvNet of width 16)."""
    out = []
    for j, (data, _) in enumerate(members):
        p = {k: v[j] for k, v in params.items()}
        b = {k: v[j] for k, v in buffers.items()}
        right, n = 0, 0
        for x, y in data.iter_eval(EVAL_BATCH):
            x, y = x.to(device), y.to(device)
            right += int((apply(template, p, b, x, train=False).argmax(1) == y).sum())
            n += len(y)
        out.append(right / n if n else float("nan"))
    return out


def meta_test_together(
    init,
    loader,
    specs: Sequence,
    steps: int,
    seeds: int,
    batch_size: int,
    train_size: int | None,
    device: torch.device,
    on_step: Callable[[Tensor], None] | None = None,
) -> dict[str, dict]:
    """The protocol's per-target results (as :func:`largemeta.metatest.meta_test` gives them one at a
    time) with every (target, seed) of one shape fine-tuned in one batched run: the same images, subsets,
    batches, seeds and heads as the loop."""
    opened: list[TaskImages] = []
    members: dict[tuple, list[tuple[int, int, TaskImages, int]]] = {}
    try:
        for i, spec in enumerate(specs):
            for s in range(seeds):
                data, target = target_images(loader, spec, i, s, train_size)
                opened += [target, data] if target is not data else [data]
                members.setdefault(shape_of(target), []).append((i, s, target, task_seed(1000 + s, i)))
        curves: dict[tuple[int, int], dict[int, float]] = {}
        for group in members.values():
            found = fine_tune_together(
                init,
                [(target, seed) for _, _, target, seed in group],
                steps=steps,
                batch_size=batch_size,
                device=device,
                on_step=on_step,
            )
            curves.update({(i, s): c for (i, s, _, _), c in zip(group, found, strict=True)})
    finally:
        for data in opened:
            data.close()
    results = {}
    for i, spec in enumerate(specs):
        mine = [curves[(i, s)] for s in range(seeds)]
        results[spec.name] = summary([c[steps] for c in mine], mine)
    return results
