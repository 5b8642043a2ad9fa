"""Stateless use of a body: one module *template*, many tasks, each with its own tensors.

A task's parameters are a dict: the body's parameters under their module names (the shared part, φ, which
includes BatchNorm's affine weights) plus its head under ``head.weight`` / ``head.bias`` (private, never in
φ).
BatchNorm running statistics are *buffers*, one dict per task: each task normalizes its own domain with its
own statistics at evaluation time, and they are never meta-learned, shifted or reset. :func:`apply` runs the
template through ``torch.func.functional_call`` with a task's tensors swapped in, so the template's own
parameters and buffers are never read or written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from largemeta.core.params import Params

HEAD = "head."
"""Prefix of a task's private head parameters (body parameter names never start with it)."""


def split_state(model: nn.Module) -> tuple[Params, Params]:
    """Detached copies of the template's (parameters, buffers), keyed by name.

    The parameters become φ's initial value; each task gets its own copy of the buffers.
    """
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    clash = [k for k in params if k.startswith(HEAD)]
    if clash:
        raise ValueError(f"body parameter names {clash} clash with the head prefix {HEAD!r}")
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    return params, buffers


def init_head(classes: int, features: int, generator: torch.Generator | None = None) -> Params:
    """A fresh linear head ``{'head.weight': (classes, features), 'head.bias': (classes,)}``.

    Same distribution as ``nn.Linear``'s default: U(−1/√features, 1/√features) for weight and bias, but drawn
    from ``generator`` so every task's head is reproducible on its own.
    """
    bound = 1.0 / math.sqrt(features)
    weight = (torch.rand(classes, features, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(classes, generator=generator) * 2 - 1) * bound
    return {HEAD + "weight": weight, HEAD + "bias": bias}


def body_params(params: Mapping[str, Tensor]) -> Params:
    return {k: v for k, v in params.items() if not k.startswith(HEAD)}


def features(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    x: Tensor,
    train: bool = True,
) -> Tensor:
    """The body's features of ``x`` with a task's parameters and BatchNorm buffers.

    In train mode BatchNorm normalizes with batch statistics and updates ``buffers`` in place (the running
    mean/var and ``num_batches_tracked`` tensors of the dict are the ones written); in eval mode it uses them.

    Args:
        model: the body's template module (its own tensors are not used).
        params: the task's parameters by name (the body's; a head's are ignored).
        buffers: the task's BatchNorm buffers by name.
        x: images, shape (B, C, H, W), float.
        train: batch statistics (and buffer updates) or the running ones.

    Returns:
        Features, shape (B, F).
    """
    was = model.training
    model.train(train)
    try:
        return functional_call(model, {**body_params(params), **buffers}, (x,), strict=True)
    finally:
        model.train(was)


def apply(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    x: Tensor,
    train: bool = True,
) -> Tensor:
    """Logits of ``x``: the body (see :func:`features`) followed by the task's head ``params['head.*']``.

    Args:
        x: images, shape (B, C, H, W), float.

    Returns:
        Logits, shape (B, classes) for a head of ``classes`` outputs.
    """
    feats = features(model, params, buffers, x, train)
    return F.linear(feats, params[HEAD + "weight"], params[HEAD + "bias"])
