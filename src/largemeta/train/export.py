"""Export a run's φ as a plain state_dict of the body (safetensors), loadable with ``model.load_state_dict``.

BatchNorm running statistics are per task and not meta-learned; the export carries the body's fresh ones
(mean 0, variance 1), as a new task starts with. A φ holding NaN or inf is refused, and so is an ``--out``
that exists and is not an export of largemeta. The file format is :mod:`largemeta.phi`'s.
"""

from __future__ import annotations

from pathlib import Path

import torch

from largemeta.errors import UserError
from largemeta.models import create_model, split_state
from largemeta.phi import is_export, load_weights, save
from largemeta.train.config import from_mapping
from largemeta.train.paths import model_file


def export(run_dir: Path, out: Path) -> Path:
    if out.suffix != ".safetensors":
        raise UserError(f"--out {str(out)!r} must end in .safetensors")
    if not Path(run_dir).is_dir():
        raise UserError(f"export needs a run folder, got {str(run_dir)!r}")
    if not out.parent.is_dir():
        raise UserError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist; create it first")
    if out.exists() and not (out.is_file() and is_export(out)):
        raise UserError(f"--out {str(out)!r} exists and is not a largemeta export; choose another name")
    weights = load_weights(run_dir)  # refuses a non-finite φ
    cfg = from_mapping(weights.config)
    file = model_file(cfg.model)
    if file is not None and not Path(file).is_file():
        raise UserError(
            f"the body code run {str(run_dir)!r} recorded, {file!r}, is gone: export builds the body for its "
            "BatchNorm buffers; put the file back at that path (φ itself is intact: largemeta.load_phi reads "
            "it without the code)"
        )
    torch.manual_seed(cfg.seed)
    channels = weights.in_channels or 3
    _, buffers = split_state(create_model(cfg.model, in_channels=channels, width=cfg.width))
    return save(
        out,
        {**weights.phi, **buffers},
        model=cfg.model,
        in_channels=channels,
        step=weights.step,
        config=cfg.to_dict(),
    )
