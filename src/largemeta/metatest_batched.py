"""The meta-test protocol run for many (target, seed) members at once: one vmapped model instead of a loop.

:func:`largemeta.metatest.fine_tune` fine-tunes one (target, seed) at a time; a meta-test repeats it for every
target and seed with the same body. Here the members that share a shape (head width, image shape) are
fine-tuned *together*: their parameters, Adam states and BatchNorm buffers are stacked along a new leading
dimension and one ``torch.func.vmap``-ed loss gives every member its gradient (the members are independent,
so the gradient of the sum of their losses with respect to the stack is the stack of their own gradients).

What each member sees is what it sees alone, so the two agree to float tolerance (``tests/metatest/
test_metatest_batched.py`` checks it against the one-at-a-time loop, which stays the oracle):

* φ and BatchNorm buffers: :func:`largemeta.metatest.body_and_phi` with the member's seed (so scratch members
  get the same random bodies); the head from the member's own generator, as alone.
* data: each member keeps its own :class:`~largemeta.data.images.TaskImages` and its own seeded sampler; at
  every step each member's sampler draws one batch, as it does alone (the samplers' generators are their own,
  so the order in which members draw does not matter).
* BatchNorm: the stacked running statistics are vmapped inputs, so each member's slice is updated in place
  with its own batch statistics; evaluation normalizes each member with its own.
* the optimizer: Adam and its schedule are element-wise, so one Adam over the stacked tensors is each
  member's Adam.

Not bitwise: a vmapped convolution is a grouped one, whose reductions may round differently.

Where it pays: vmap turns the members' convolutions into grouped ones, which CPU kernels run no faster than
the loop (``benchmarks/metatest_batched.py --steps 20 --threads 1`` on this project's shared 2-core CPU:
0.70× the loop's speed for the demo's 3 targets × 3 seeds, 35 classes, batch 64, width 16); so
:func:`largemeta.metatest.meta_test` batches by default only on an accelerator (``together=None``).

Bodies that draw random numbers (Dropout) are fine-tuned one at a time (their masks come from the global
generator in the loop's order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from largemeta.data.images import TaskImages
from largemeta.models import feature_size, init_head
from largemeta.models.functional import apply
from largemeta.models.task import draws_random_numbers

EVAL_BATCH = 512
"""Images per evaluation forward (as :func:`largemeta.metatest.fine_tune`)."""


def shape_of(data: TaskImages) -> tuple:
    """What members must share to be fine-tuned together: head width and image shape."""
    return (data.num_classes, data.image_shape)


def can_batch(init, seed: int = 0) -> bool:
    """Whether ``init``'s body may be fine-tuned batched (it draws no random numbers)."""
    from largemeta.metatest import body_and_phi

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
    from largemeta.metatest import body_and_phi, fine_tune_optimizer

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
    from largemeta.data.images import task_seed
    from largemeta.metatest import summary, target_images

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
