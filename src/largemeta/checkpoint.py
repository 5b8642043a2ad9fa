"""Checkpoints written atomically and read without executing code.

``save`` writes to a temporary file in the same folder, fsyncs it, renames it over the target and fsyncs the
folder: a crash at any moment leaves either the previous checkpoint or the new one, never a torn file.
``load`` uses ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only, so a
checkpoint cannot run code. The file is ``torch.save``'s bytes followed by a trailer holding their sha256, so
a flipped bit anywhere (tensor data included, which torch's own format does not check) is refused, not loaded.
Every failure is a one-line :class:`UserError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from largemeta.errors import UserError

FORMAT = "largemeta-checkpoint-v1"
TRAILER = b"\nlargemeta-sha256:"
_TRAILER_LEN = len(TRAILER) + 64


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file, then atomically replace ``path`` with it."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UserError(f"cannot write {str(path)!r}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(
            f"cannot write {str(path)!r}: {err.strerror or err}; the previous file is intact"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    data = path.read_bytes()
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
