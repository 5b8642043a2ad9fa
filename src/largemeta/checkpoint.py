"""Checkpoints written atomically and read without executing code.

``save`` writes with :func:`largemeta.files.atomic_write` (a temporary file in the same folder, fsynced and
renamed over the target, with the user's umask): a crash at any moment leaves either the previous checkpoint
or the new one, never a torn file.
``load`` uses ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only, so a
checkpoint cannot run code. The file is ``torch.save``'s bytes followed by a trailer holding their sha256, so
a flipped bit anywhere (tensor data included, which torch's own format does not check) is refused, not loaded.
Every failure is a one-line :class:`UserError` naming the file.
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

__all__ = ["FORMAT", "atomic_write", "load", "save"]

FORMAT = "largemeta-checkpoint-v1"
TRAILER = b"\nlargemeta-sha256:"
_TRAILER_LEN = len(TRAILER) + 64


def save(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    payload = buffer.getvalue()
    trailer = TRAILER + hashlib.sha256(payload).hexdigest().encode()

    def write(fh) -> None:
        fh.write(payload)
        fh.write(trailer)

    atomic_write(path, write)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
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
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"checkpoint {str(path)!r} is corrupt or not a largemeta checkpoint ({first[:160]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"checkpoint {str(path)!r} is not a {FORMAT} file")
    return state
