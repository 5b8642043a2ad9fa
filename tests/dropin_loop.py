"""The drop-in API tests' stand-in for a user's own training loop (CPU and test device alike)."""

from __future__ import annotations

from torch import nn


def user_loop(cts, models, opts, batches, steps, start=0, between=None):
    """The user's own loop: backward, torch.optim step, cts.step()."""
    for i in range(start, start + steps):
        for model, opt, task_batches in zip(models, opts, batches, strict=True):
            x, y = task_batches[i]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        cts.step()
        if between:
            between(i + 1)
