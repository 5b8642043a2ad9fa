"""Export a run's φ as a plain state_dict of the body (safetensors), loadable with ``model.load_state_dict``.

BatchNorm running statistics are per task and not meta-learned; the export carries the body's fresh ones
(mean 0, variance 1), as a new task starts with.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save

from largemeta import checkpoint
from largemeta.errors import UserError
from largemeta.models import create_model, split_state
from largemeta.runs import load_weights
from largemeta.train.config import from_mapping


def export(run_dir: Path, out: Path) -> Path:
    if out.suffix != ".safetensors":
        raise UserError(f"--out {str(out)!r} must end in .safetensors")
    if not Path(run_dir).is_dir():
        raise UserError(f"export needs a run folder, got {str(run_dir)!r}")
    weights = load_weights(run_dir)
    cfg = from_mapping(weights.config)
    torch.manual_seed(cfg.seed)
    _, buffers = split_state(create_model(cfg.model, in_channels=weights.in_channels or 3, width=cfg.width))
    tensors = {**{k: v.contiguous() for k, v in weights.phi.items()}, **buffers}
    meta = {
        "format": "largemeta-phi",
        "model": cfg.model,
        "step": str(weights.step),
        "config": json.dumps(cfg.to_dict()),
    }
    payload = save(tensors, metadata=meta)
    checkpoint.atomic_write(out, lambda fh: fh.write(payload))
    return out
