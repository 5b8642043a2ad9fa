"""BatchNorm over a task's whole batch when its batch is split over a group of ranks (SyncBatchNorm semantics
on the functional path, any device).

When several ranks serve one task (:mod:`largemeta.train.groups`), each holds a slice of the task's batch.
Plain BatchNorm would normalize every slice with its own statistics, so the result would depend on how many
ranks serve the task. :class:`GroupBatchNorm` makes each training-mode forward use the statistics of the
whole batch: per channel, the slices' sums and sums of squares are added over the group with one
autograd-aware all-reduce (:class:`GroupSum`: the backward all-reduces the gradient of the statistics), so
both the forward and the backward are those of the whole batch. The running
statistics are updated from the whole-batch mean and unbiased variance exactly as ``nn.BatchNorm`` does —
identically on every rank of the group. Evaluation mode uses the running statistics and communicates nothing.

``torch.nn.SyncBatchNorm`` is not used: it refuses CPU tensors, and the bodies here run through
``torch.func.functional_call`` with per-task buffers (:mod:`largemeta.models.functional`), which this module
keeps working: :func:`convert_batchnorm` swaps the template's BatchNorm modules for this subclass with the
same parameter and buffer names.

Cost: one all-reduce of 2·C floats per BatchNorm layer per training forward (latency-bound; about 20 for a
ResNet-20). The variance is E[x²] − E[x]² in fp32 — equal to BatchNorm's own to about 1e-6 relative on
normalized activations.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

_PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class GroupSum(torch.autograd.Function):
    """``x`` summed over a process group, differentiably: the gradient of the sum w.r.t. each rank's ``x`` is
    the sum of every rank's output gradient (one all-reduce each way). The same as
    ``torch.distributed.nn.functional.all_reduce``, which recent torch deprecates."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        out = grad.clone()
        dist.all_reduce(out, group=ctx.group)
        return out, None


class GroupBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the batch summed over ``group`` (``size`` ranks, equal
    slices). Build it with :meth:`from_module`; ``group=None`` behaves as plain BatchNorm."""

    group: Any = None
    size: int = 1

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-d input (N, C, ...), got {x.dim()}-d")

    @classmethod
    def from_module(cls, bn: nn.modules.batchnorm._BatchNorm, group: Any, size: int) -> GroupBatchNorm:
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        # the same tensors under the same names: functional_call swaps in each task's own
        new._parameters = bn._parameters
        new._buffers = bn._buffers
        new.training = bn.training
        new.group, new.size = group, size
        return new

    def forward(self, x: Tensor) -> Tensor:
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not batch_stats or self.group is None or self.size == 1:
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims)])
        total = GroupSum.apply(local, self.group)
        count = (x.numel() // c) * self.size
        mean = total[:c] / count
        var = (total[c:] / count - mean * mean).clamp_min(0)
        out = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.training and self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                factor = self.momentum
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                    if factor is None:
                        factor = 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (count / max(count - 1, 1))
                self.running_mean.mul_(1 - factor).add_(
                    mean.detach().to(self.running_mean.dtype), alpha=factor
                )
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return out.to(x.dtype)


def convert_batchnorm(model: nn.Module, group: Any, size: int) -> int:
    """Replace, in place, every ``BatchNorm1d/2d/3d`` of ``model`` by a :class:`GroupBatchNorm` over ``group``
    (same parameters and buffers); returns how many were replaced. Other normalization layers are left as
    they are (and stay local to each rank's slice)."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _PLAIN:
                setattr(parent, name, GroupBatchNorm.from_module(child, group, size))
                count += 1
    return count
