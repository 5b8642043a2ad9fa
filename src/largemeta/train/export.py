"""Export a run's φ as a plain state_dict of the body (safetensors), loadable with ``model.load_state_dict``.

BatchNorm running statistics are per task and not meta-learned; the export carries the body's fresh ones
(mean 0, variance 1), as a new task starts with.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from largemeta.errors import UserError
from largemeta.models import create_model, split_state
from largemeta.train import checkpoint
from largemeta.train.config import from_mapping
from largemeta.train.trainer import CHECKPOINT, _model_kwargs


def body_of(cfg, channels: int) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    return create_model(cfg.model, **_model_kwargs(cfg, channels))


def export(run_dir: Path, out: Path) -> Path:
    if out.suffix != ".safetensors":
        raise UserError(f"--out {str(out)!r} must end in .safetensors")
    state = checkpoint.load(run_dir / CHECKPOINT)
    cfg = from_mapping(state["config"])
    phi = state["shared"]["phi"]
    channels = next(v for k, v in phi.items() if v.dim() == 4).shape[1]
    _, buffers = split_state(body_of(cfg, channels))
    tensors = {**{k: v.contiguous() for k, v in phi.items()}, **buffers}
    from safetensors.torch import save

    meta = {"format": "largemeta-phi", "model": cfg.model, "step": str(state["step"]),
            "config": json.dumps(cfg.to_dict())}
    payload = save(tensors, metadata=meta)
    checkpoint.atomic_write(out, lambda fh: fh.write(payload))
    return out
