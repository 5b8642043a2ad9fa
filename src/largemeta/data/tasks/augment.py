"""Batched, device-side augmentation of uint8 image batches (B, C, H, W).

Everything works on the whole batch at once on the tensor's device. The random choices (crop offsets, flip
mask) are given: a task's :class:`~largemeta.data.tasks.sampler.TaskSampler` draws them, so that its stream of
batches is reproducible and can be checkpointed. Cropping and flipping stay in uint8 (a quarter of the memory
traffic of float); only the final :func:`normalize` produces float.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_at(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Crop each image ``i`` of ``x`` at (``top[i]``, ``left[i]``) of its zero-padded version.

    Equivalent to ``F.pad(x, [padding] * 4)[i, :, top[i]:top[i] + H, left[i]:left[i] + W]`` for every ``i``,
    done with one gather: each output pixel (i, r, c) reads padded[i, top[i] + r, left[i] + c].
    Offsets lie in ``[0, 2 * padding]``.
    """
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = top.view(b, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)  # (B, H, 1)
    cols = left.view(b, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)  # (B, 1, W)
    wp = w + 2 * padding
    # Flat index into each padded image plane, shared by all channels.
    flat = (rows * wp + cols).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)


def flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Images of ``x`` mirrored left-right where ``mask`` (B,) is true."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def normalize(x: torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """uint8 0..255 -> float32 with mean 0.5 / std 0.5, i.e. (x / 255 - 0.5) / 0.5, in [-1, 1].

    ``channels=3`` repeats a grey image to three channels (models shared across grey and colour tasks).
    """
    out = x.to(torch.float32).mul_(1.0 / 127.5).sub_(1.0)
    if channels is not None and channels != out.shape[1]:
        if out.shape[1] != 1 or channels != 3:
            raise ValueError(f"cannot turn {out.shape[1]} channels into {channels}")
        out = out.expand(-1, 3, -1, -1).contiguous()
    return out


def apply_augmentation(
    x: torch.Tensor,
    *,
    padding: int,
    offsets: torch.Tensor | None,
    mask: torch.Tensor | None,
    channels: int | None = None,
) -> torch.Tensor:
    """Crop each image at its ``offsets`` (2, B) (None: no crop), mirror it where ``mask`` (B,) is true (None:
    no flip), then :func:`normalize`; the offsets and mask come from a
    :class:`~largemeta.data.tasks.sampler.TaskSampler` draw."""
    if offsets is not None:
        x = crop_at(x, padding, offsets[0], offsets[1])
    if mask is not None:
        x = flip_where(x, mask)
    return normalize(x, channels)


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) to ``size`` x ``size`` (bilinear; antialiased when shrinking), in chunks."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8, device=x.device)
    shrink = size < max(x.shape[-2:])
    for i in range(0, x.shape[0], chunk):
        part = F.interpolate(
            x[i : i + chunk].float(),
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=shrink,
        )
        out[i : i + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (N, 3, H, W) -> uint8 grey (N, 1, H, W) with ITU-R 601 luma weights."""
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
