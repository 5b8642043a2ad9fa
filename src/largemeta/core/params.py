"""Parameters as plain ``dict[str, Tensor]`` and the few operations the algorithms need on them.

φ (the shared initialization) is such a dict. A task's parameters are a dict holding every key of φ (its
*shared* part, which meta-learning moves) plus task-private keys (e.g. a classification head), which are never
meta-updated, shifted or reset into φ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

Params = dict[str, Tensor]
"""Parameters as a dict of name -> tensor (φ, each task's θ, gradients): the names of a module's
``named_parameters()``, each tensor of that parameter's shape."""


def clone(params: Mapping[str, Tensor]) -> Params:
    """Detached copies of every tensor."""
    return {k: v.detach().clone() for k, v in params.items()}


def zeros_like(params: Mapping[str, Tensor]) -> Params:
    return {k: torch.zeros_like(v) for k, v in params.items()}


def sq_norm(params: Mapping[str, Tensor]) -> Tensor:
    """Squared Euclidean norm of all tensors together (a 0-d tensor)."""
    total = None
    for v in params.values():
        sq = v.detach().double().pow(2).sum()
        total = sq if total is None else total + sq
    return total if total is not None else torch.zeros((), dtype=torch.float64)


def norm(params: Mapping[str, Tensor]) -> float:
    return float(sq_norm(params).sqrt())


def flatten(params: Mapping[str, Tensor], keys: Iterable[str] | None = None) -> Tensor:
    """All tensors (in ``keys`` order, default dict order) as one 1-d tensor."""
    keys = list(params) if keys is None else list(keys)
    return torch.cat([params[k].reshape(-1) for k in keys])


def unflatten(flat: Tensor, like: Mapping[str, Tensor]) -> Params:
    """Inverse of :func:`flatten`: views of ``flat`` shaped like ``like`` (dict order)."""
    out, offset = {}, 0
    for k, v in like.items():
        out[k] = flat[offset : offset + v.numel()].view_as(v)
        offset += v.numel()
    if offset != flat.numel():
        raise ValueError(f"flat tensor has {flat.numel()} elements, parameters need {offset}")
    return out


def map_tensors(value: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``value`` with ``fn`` applied to every tensor inside its dicts, lists and tuples (a state dict's tree
    map)."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(v, fn) for v in value)
    return value
