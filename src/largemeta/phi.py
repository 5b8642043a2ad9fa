"""φ as a file, the one module of its format: read a trained φ back (:func:`load_phi`, from a run folder's
checkpoint or an export), put it into your own ``nn.Module`` (:func:`load_phi_into`), and write an export
(:func:`save`; ``largemeta export`` writes the same), so that ``largemeta evaluate --init FILE.safetensors``
takes it.

An *export* is a safetensors file of the body's state dict — φ and the body's BatchNorm buffers — whose
metadata says ``format`` = ``largemeta-phi`` (:data:`FORMAT`) and records the body (``model``, a name
``largemeta.models.create_model`` builds), ``in_channels``, the ``step`` it was trained to and the ``config``
(JSON) that trained it. :func:`is_export` and the reader decide "is an export" by the same ``format`` key.
:func:`fit_to_body` is the one check that a φ fits a body, tensor by tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from largemeta.core.params import Params
from largemeta.errors import UserError
from largemeta.files import atomic_write
from largemeta.runs import checkpoint

__all__ = ["FORMAT", "load_phi", "load_phi_into", "save"]

FORMAT = "largemeta-phi"
"""The ``format`` entry in the metadata of an exported φ (``largemeta export``, :func:`save`)."""


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata() or {}


def is_export(path: Path) -> bool:
    """Whether ``path`` is a file ``largemeta export`` wrote (its metadata's ``format``)."""
    try:
        return _metadata(path).get("format") == FORMAT
    except (SafetensorError, OSError):
        return False


def write_export(
    path: Path,
    tensors: Params,
    *,
    config: dict[str, Any],
    model: str,
    step: int | None,
    in_channels: int | None,
) -> None:
    """Write an export atomically (see the module docstring for what it records)."""
    meta = {
        "format": FORMAT,
        "model": model,
        "step": str(step),
        "in_channels": str(in_channels),
        "config": json.dumps(config),
    }
    payload = safetensors_bytes(tensors, metadata=meta)
    atomic_write(path, lambda fh: fh.write(payload))


@dataclass(frozen=True)
class TrainedWeights:
    """φ read from a run folder or an exported file, and the config of the run that trained it."""

    source: str
    phi: Params
    config: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    """Cumulative inner steps per task that trained φ (when recorded)."""
    channels: int | None = None
    """Input channels of the body, when recorded (exports record it; older ones may not)."""

    @property
    def model(self) -> str:
        return str(self.config.get("model", "convnet"))

    @property
    def in_channels(self) -> int | None:
        """Input channels of the body: as recorded, else read off its first convolution (None when that is
        not 1 or 3: then the first convolution is not there, and fitting φ to the body names it)."""
        if self.channels in (1, 3):
            return self.channels
        conv = next((v for v in self.phi.values() if v.dim() == 4), None)
        return int(conv.shape[1]) if conv is not None and conv.shape[1] in (1, 3) else None


def check_finite(tensors: Params, what: str) -> None:
    """A one-line error naming the first tensor holding NaN or inf."""
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise UserError(f"{what}: tensor {k!r} holds NaN or inf; refusing to use it")


def load_weights(source: str | Path) -> TrainedWeights:
    """φ from a run folder (its checkpoint) or a ``.safetensors`` file written by ``largemeta export``;
    refused when any of it is not finite."""
    path = Path(source)
    if path.is_dir():
        on_disk, phi = checkpoint.read_phi(path)
        weights = TrainedWeights(str(source), phi, on_disk.config, on_disk.step)
    elif path.suffix == ".safetensors" and path.is_file():
        weights = _load_safetensors(path, str(source))
    else:
        raise UserError(f"{str(source)!r} is not a run folder or an existing .safetensors file")
    check_finite(weights.phi, f"φ of {str(source)!r}")
    return weights


def _load_safetensors(path: Path, source: str) -> TrainedWeights:
    try:
        meta = _metadata(path)
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{source!r} is not a readable .safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise UserError(
            f"{source!r} has no largemeta metadata (format {FORMAT!r}; write it with 'largemeta export')"
        )
    try:
        config = json.loads(meta["config"])
    except (ValueError, RecursionError):
        config = None
    if not isinstance(config, dict):
        raise UserError(
            f"{source!r}: its 'config' metadata is not a JSON object (write it with 'largemeta export')"
        )
    raw_step = meta.get("step", "None")
    if not (raw_step.isdigit() or raw_step in ("None", "")):
        raise UserError(
            f"{source!r}: its 'step' metadata {raw_step!r} is not a whole number of steps (write it with "
            "'largemeta export')"
        )
    step = int(raw_step) if raw_step.isdigit() else None
    for k, v in tensors.items():  # φ is parameters (and BatchNorm buffers, whose step counter is an integer)
        if not v.is_floating_point() and not k.endswith("num_batches_tracked"):
            raise UserError(
                f"{source!r}: tensor {k!r} is {str(v.dtype).removeprefix('torch.')}, φ's tensors are "
                "floating point (write it with 'largemeta export')"
            )
    channels = int(meta["in_channels"]) if meta.get("in_channels", "") in ("1", "3") else None
    return TrainedWeights(source, tensors, config, step, channels)


def fit_to_body(phi: Params, body_params: Params, *, what: str, model: str) -> Params:
    """``phi`` restricted to the body's parameters and cast to their dtypes, after checking that every one of
    them is there with its shape; a one-line :class:`UserError` naming the first that is not."""
    for k, v in body_params.items():
        if k not in phi:
            raise UserError(f"{what} lacks tensor {k!r} of model {model} (shape {tuple(v.shape)})")
        if v.is_floating_point() and not phi[k].is_floating_point():
            raise UserError(
                f"{what}: tensor {k!r} is {str(phi[k].dtype).removeprefix('torch.')}, model {model} needs "
                f"floating point ({str(v.dtype).removeprefix('torch.')})"
            )
        if phi[k].shape != v.shape:
            raise UserError(
                f"{what} does not fit model {model}: tensor {k!r} has shape "
                f"{tuple(phi[k].shape)}, the model needs {tuple(v.shape)}"
            )
    return {k: phi[k].detach().clone().to(v.dtype) for k, v in body_params.items()}


def load_phi(source: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """φ of a run folder (its latest checkpoint) or of an exported ``.safetensors`` file, and what is known
    about it: ``{"model", "in_channels", "step", "config"}``. A one-line :class:`UserError` for anything
    else, or for a φ holding NaN or inf."""
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
    out = Path(path)
    if out.suffix != ".safetensors":
        raise UserError(
            f"{str(out)!r} must end in .safetensors (the format 'largemeta evaluate --init' reads)"
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    check_finite(tensors, f"φ for {str(out)!r}")
    write_export(out, tensors, config=config, model=model, step=step, in_channels=in_channels)
    return out
