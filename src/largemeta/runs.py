"""Run folders and trained weights: where a run keeps its files, and how φ is read back for a new start.

A run folder (``largemeta train --out RUN``) holds::

    config.json      the resolved config (human-readable copy)
    checkpoint.json  the latest checkpoint's manifest, naming its folder checkpoint-NNNNNNNN/ (one file per
                     rank that wrote it; largemeta.sharded_checkpoint)
    checkpoint.pt    the checkpoint of a run written by version 0.1 (one file; read, superseded on resume)
    metrics.jsonl    one JSON line per log step
    tensorboard/     optional event files

φ can be read back from a run folder (its checkpoint) or from a ``.safetensors`` file written by
``largemeta export``; :func:`fit_to_body` is the one check that such a φ fits a body, tensor by tensor.
This module sits below both the trainer and the meta-test protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from largemeta import checkpoint, sharded_checkpoint
from largemeta.core.params import Params
from largemeta.errors import UserError

CHECKPOINT_NAME = "checkpoint"
CHECKPOINT = f"{CHECKPOINT_NAME}.json"
"""The latest checkpoint's manifest (see :mod:`largemeta.sharded_checkpoint`)."""
LEGACY_CHECKPOINT = "checkpoint.pt"
"""Version 0.1's single-file checkpoint (:mod:`largemeta.checkpoint`), still read."""
CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run folder holds a checkpoint (either format)."""
    return (Path(run_dir) / CHECKPOINT).is_file() or (Path(run_dir) / LEGACY_CHECKPOINT).is_file()


def read_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config a run folder was started with (``config.json``)."""
    config_file = Path(run_dir) / CONFIG
    if not config_file.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run folder: no {CONFIG} there")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{str(run_dir)!r}: {CONFIG} is corrupt") from None
    if not isinstance(config, dict):
        raise UserError(f"{str(run_dir)!r}: {CONFIG} is not a JSON object")
    return config


@dataclass(frozen=True)
class TrainedWeights:
    """φ read from a run folder or an exported file, and the config of the run that trained it."""

    source: str
    phi: Params
    config: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    """Cumulative inner steps per task that trained φ (when recorded)."""

    @property
    def model(self) -> str:
        return str(self.config.get("model", "convnet"))

    @property
    def in_channels(self) -> int | None:
        """Input channels of the body, read off its first convolution (None without one)."""
        conv = next((v for v in self.phi.values() if v.dim() == 4), None)
        return int(conv.shape[1]) if conv is not None else None


def load_weights(source: str | Path) -> TrainedWeights:
    """φ from a run folder (its checkpoint) or a ``.safetensors`` file written by ``largemeta export``."""
    path = Path(source)
    if path.is_dir() and (path / CHECKPOINT).is_file():
        manifest = sharded_checkpoint.read_manifest(path, CHECKPOINT_NAME)
        shared = sharded_checkpoint.load(path, ["shared"], manifest=manifest, name=CHECKPOINT_NAME)["shared"]
        return TrainedWeights(str(source), shared["phi"], manifest.info.get("config") or {}, manifest.step)
    if path.is_dir():
        state = checkpoint.load(path / LEGACY_CHECKPOINT)
        return TrainedWeights(str(source), state["shared"]["phi"], state["config"], int(state["step"]))
    if path.suffix == ".safetensors" and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise UserError(f"{str(source)!r} is not a readable .safetensors file ({err})") from None
        if "config" not in meta:
            raise UserError(f"{str(source)!r} has no largemeta metadata (write it with 'largemeta export')")
        step = int(meta["step"]) if meta.get("step", "").isdigit() else None
        return TrainedWeights(str(source), tensors, json.loads(meta["config"]), step)
    raise UserError(f"{str(source)!r} is not a run folder or an existing .safetensors file")


def fit_to_body(phi: Params, body_params: Params, *, what: str, model: str) -> Params:
    """``phi`` restricted to the body's parameters and cast to their dtypes, after checking that every one of
    them is there with its shape; a one-line :class:`UserError` naming the first that is not."""
    for k, v in body_params.items():
        if k not in phi:
            raise UserError(f"{what} lacks tensor {k!r} of model {model} (shape {tuple(v.shape)})")
        if phi[k].shape != v.shape:
            raise UserError(
                f"{what} does not fit model {model}: tensor {k!r} has shape "
                f"{tuple(phi[k].shape)}, the model needs {tuple(v.shape)}"
            )
    return {k: phi[k].detach().clone().to(v.dtype) for k, v in body_params.items()}
