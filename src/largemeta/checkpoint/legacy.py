"""The single-file checkpoint, format ``largemeta-checkpoint-v1`` (``checkpoint.pt``, written by version 0.1):
read, and converted on the way in to the entries of the sharded format.

The file is ``torch.save``'s bytes of one dict followed by a trailer holding their sha256, so a flipped bit
anywhere (tensor data included, which torch's own format does not check) is refused, not loaded. It is read
with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only, so a checkpoint
cannot run code. The dict holds ``format``, ``config``, ``step``, ``task_names``, ``shared`` (the learner's
state common to all tasks, φ included) and ``tasks`` (one dict per meta-train task, in the config's order),
and may hold ``identity``, ``world`` and ``data_placement``. Every failure is a one-line :class:`UserError`
naming the file.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from largemeta.errors import UserError
from largemeta.files import atomic_write

FORMAT = "largemeta-checkpoint-v1"
TRAILER = b"\nlargemeta-sha256:"
_TRAILER_LEN = len(TRAILER) + 64
INFO = ("config", "identity", "task_names", "world", "data_placement")
"""The keys that describe the run (the sharded format keeps them in its manifest's ``info``)."""
# What a whole checkpoint must hold: key path -> type.
_LAYOUT: dict[tuple[str, ...], type] = {
    ("step",): int,
    ("shared",): dict,
    ("shared", "phi"): dict,
    ("tasks",): list,
}


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` in this format, as version 0.1 did (kept for test fixtures and cost comparisons)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    payload = buffer.getvalue()
    trailer = TRAILER + hashlib.sha256(payload).hexdigest().encode()

    def write(fh) -> None:
        fh.write(payload)
        fh.write(trailer)

    atomic_write(path, write)


def load(path: Path) -> dict[str, Any]:
    """The file's dict, on the CPU, its checksum verified (no check of what it holds: see :func:`read`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read checkpoint {str(path)!r}: {err.strerror or err}") from None
    payload, trailer = data[:-_TRAILER_LEN], data[-_TRAILER_LEN:]
    if len(data) < _TRAILER_LEN or not trailer.startswith(TRAILER):
        raise UserError(
            f"checkpoint {str(path)!r} is corrupt or not a largemeta checkpoint (no checksum trailer)"
        )
    if hashlib.sha256(payload).hexdigest().encode() != trailer[len(TRAILER) :]:
        raise UserError(f"checkpoint {str(path)!r} is corrupt (sha256 mismatch: truncated or altered)")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"checkpoint {str(path)!r} is corrupt or not a largemeta checkpoint ({first[:160]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"checkpoint {str(path)!r} is not a {FORMAT} file")
    return state


def read(path: Path) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``(step, info, entries)`` of a whole checkpoint file: ``info`` the run's description (:data:`INFO`),
    ``entries`` as the sharded format names them: ``"shared"``, and ``"task/<i>"`` for meta-train task i.
    A one-line error when the file lacks what a checkpoint holds."""
    state = load(path)
    for keys, kind in _LAYOUT.items():
        value: Any = state
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(
                f"checkpoint {str(path)!r} is incomplete: {'.'.join(keys)} is missing or not a "
                f"{kind.__name__} (not a whole largemeta checkpoint)"
            )
    if not all(isinstance(v, torch.Tensor) for v in state["shared"]["phi"].values()):
        raise UserError(f"checkpoint {str(path)!r} is incomplete: shared.phi holds something not a tensor")
    info = {k: state[k] for k in INFO if k in state}
    entries = {"shared": state["shared"], **{f"task/{i}": t for i, t in enumerate(state["tasks"])}}
    return int(state["step"]), info, entries
