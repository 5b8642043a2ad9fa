"""How one checkpoint *entry* (a nest of dicts, lists, tuples, tensors, numbers and strings) becomes tensors
only, and back.

An entry ``E`` becomes one tensor per tensor it holds (``E/0``, ``E/1``, …; tensors of at most
:data:`PACK_BYTES` are packed, one ``E/pack-DTYPE`` tensor per dtype) and a *skeleton*: its structure, every
non-tensor value and where each packed tensor lies, as JSON, stored as the uint8 tensor ``E/skeleton``. So a
stored checkpoint holds tensors only, and reading one never unpickles anything but tensors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import torch

SKELETON = "skeleton"
PACK_BYTES = 64 << 10
"""Tensors up to this size are packed, per dtype, into one stored tensor per entry (the storage's cost per
item is a few hundred microseconds; a model has hundreds of small tensors — biases, BatchNorm, step
counters)."""
ENTRY_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
"""Entry names: words of letters, digits, ``_ . -`` joined by ``/``."""


def encode(value: Any, tensors: list[torch.Tensor]) -> Any:
    """The JSON skeleton of ``value``; its tensors are appended to ``tensors`` (referenced by index)."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 0:  # nothing to store: shape and dtype are enough
            return {"e": [list(value.shape), str(value.dtype).removeprefix("torch.")]}
        tensors.append(value)
        return {"t": len(tensors) - 1}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"v": value}
    if isinstance(value, Mapping):
        for k in value:
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint dict keys must be str or int, got {k!r}")
        return {"d": [[k, encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"l" if isinstance(value, list) else "u": [encode(v, tensors) for v in value]}
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def decode(skeleton: Any, tensors: Mapping[int, torch.Tensor]) -> Any:
    """Inverse of :func:`encode` (``tensors[i]`` is the i-th tensor)."""
    if not isinstance(skeleton, dict) or len(skeleton) != 1:
        raise ValueError(f"bad skeleton node {str(skeleton)[:60]}")
    ((kind, body),) = skeleton.items()
    if kind == "t":
        return tensors[int(body)]
    if kind == "v":
        if body is not None and not isinstance(body, (bool, int, float, str)):
            raise ValueError("bad skeleton value")
        return body
    if kind == "e":
        shape, dtype = body
        if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise ValueError(f"bad dtype {dtype!r}")
        return torch.empty([int(s) for s in shape], dtype=getattr(torch, dtype))
    if kind == "d":
        return {k: decode(v, tensors) for k, v in body}
    if kind in ("l", "u"):
        items = [decode(v, tensors) for v in body]
        return items if kind == "l" else tuple(items)
    raise ValueError(f"bad skeleton kind {kind!r}")


def _owned(t: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous CPU tensor with its own storage (torch.save writes a view's whole storage)."""
    t = t.detach().to("cpu").contiguous()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or t.storage_offset():
        t = t.clone()
    return t


def flatten(entries: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Every entry as its tensors, packs and skeleton, under ``ENTRY/...`` names."""
    flat: dict[str, torch.Tensor] = {}
    for entry, value in entries.items():
        if not ENTRY_NAME.match(entry):
            raise ValueError(
                f"bad checkpoint entry name {entry!r} (words of letters, digits, _ . - joined by /)"
            )
        tensors: list[torch.Tensor] = []
        tree = encode(value, tensors)
        small: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(tensors):
            if t.numel() * t.element_size() <= PACK_BYTES:
                small.setdefault(t.dtype, []).append(i)
            else:
                flat[f"{entry}/{i}"] = _owned(t)
        packed: dict[str, list[Any]] = {}
        for dtype, members in small.items():
            name, offset = str(dtype).removeprefix("torch."), 0
            for i in members:
                packed[str(i)] = [name, offset, list(tensors[i].shape)]
                offset += tensors[i].numel()
            flat[f"{entry}/pack-{name}"] = torch.cat([tensors[i].detach().cpu().reshape(-1) for i in members])
        text = json.dumps({"tree": tree, "packed": packed}, separators=(",", ":")).encode()
        flat[f"{entry}/{SKELETON}"] = torch.frombuffer(bytearray(text), dtype=torch.uint8)
    return flat


def own_names(entry: str) -> re.Pattern[str]:
    """The stored names that belong to ``entry``: its tensors, packs and skeleton."""
    return re.compile(rf"^{re.escape(entry)}/(\d+|{SKELETON}|pack-[a-z0-9]+)$")


def unflatten(entry: str, flat: Mapping[str, torch.Tensor]) -> Any:
    """Entry ``entry`` back from the stored tensors ``flat`` (which hold at least its own); ``ValueError``,
    ``KeyError`` or ``TypeError`` when they are malformed."""
    doc = json.loads(flat[f"{entry}/{SKELETON}"].numpy().tobytes())
    own = own_names(entry)
    tensors: dict[int, torch.Tensor] = {}
    for fqn, t in flat.items():
        m = own.match(fqn)
        if m and m.group(1).isdigit():
            tensors[int(m.group(1))] = t
    for i, (dtype, offset, shape) in doc["packed"].items():
        pack = flat[f"{entry}/pack-{dtype}"]
        n = torch.Size(shape).numel()
        if not 0 <= int(offset) <= int(offset) + n <= pack.numel():
            raise ValueError(f"packed tensor {i} lies outside its pack")
        tensors[int(i)] = pack[int(offset) : int(offset) + n].view(shape).clone()
    return decode(doc["tree"], tensors)
