"""φ that travels: read a trained φ back (:func:`load_phi`), put it into your own ``nn.Module``
(:func:`load_phi_into`), and write one from the drop-in API in ``largemeta export``'s format
(:func:`save`), so that ``largemeta evaluate --init FILE.safetensors`` takes it.

The format is a safetensors file of the body's state (φ, and the body's BatchNorm buffers) whose metadata
says ``format = largemeta-phi`` and records the body (``model``, a name ``largemeta.models.create_model``
builds), ``in_channels``, the ``step`` it was trained to and the ``config`` (JSON) that trained it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from largemeta.errors import UserError
from largemeta.runs.weights import FORMAT

__all__ = ["FORMAT", "load_phi", "load_phi_into", "save"]


def load_phi(source: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """φ of a run folder (its latest checkpoint) or of an exported ``.safetensors`` file, and what is known
    about it: ``{"model", "in_channels", "step", "config"}``. A one-line :class:`UserError` for anything
    else, or for a φ holding NaN or inf."""
    from largemeta.runs.weights import load_weights

    weights = load_weights(source)
    meta = {
        "model": weights.model,
        "in_channels": weights.in_channels,
        "step": weights.step,
        "config": dict(weights.config),
    }
    return dict(weights.phi), meta


@torch.no_grad()
def load_phi_into(
    module: nn.Module, source: str | Path | dict[str, Tensor], *, prefix: str = ""
) -> list[str]:
    """Copy φ (``source``: what :func:`load_phi` reads, or a state dict) into ``module``'s parameters and
    buffers named ``prefix + name`` (e.g. ``prefix="body."`` when the body is ``module.body``), in place.
    Every tensor of φ must find its place with its shape (a one-line error names the first that does not);
    returns the names of ``module``'s parameters that φ did not set (a task's head, typically)."""
    state = source if isinstance(source, dict) else load_phi(source)[0]
    own = dict(module.named_parameters()) | dict(module.named_buffers())
    for name, value in state.items():
        target = own.get(prefix + name)
        if target is None:
            raise UserError(
                f"φ holds tensor {name!r} but {type(module).__name__} has no {prefix + name!r}"
                + ("" if prefix else "; is the body a submodule? pass prefix='NAME.'")
            )
        if target.shape != value.shape:
            raise UserError(
                f"φ's tensor {name!r} has shape {tuple(value.shape)}, {type(module).__name__}'s "
                f"{prefix + name!r} has {tuple(target.shape)}"
            )
        target.copy_(value.to(target.dtype))
    return [
        n for n, _ in module.named_parameters() if not n.startswith(prefix) or n[len(prefix) :] not in state
    ]


def save(
    path: str | Path,
    tensors: dict[str, Tensor],
    *,
    model: str,
    in_channels: int | None,
    step: int | None,
    config: dict[str, Any],
) -> Path:
    """Write ``tensors`` (a body's φ and buffers) as an exported φ; refused when any is not finite or when
    ``path`` does not end in ``.safetensors``."""
    from largemeta.runs.weights import check_finite, write_export

    out = Path(path)
    if out.suffix != ".safetensors":
        raise UserError(
            f"{str(out)!r} must end in .safetensors (the format 'largemeta evaluate --init' reads)"
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    check_finite(tensors, f"φ for {str(out)!r}")
    write_export(out, tensors, config=config, model=model, step=step, in_channels=in_channels)
    return out
