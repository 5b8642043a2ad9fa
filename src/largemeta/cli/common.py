"""Helpers shared by the command modules: JSON output, output folders, argument types."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from largemeta.argtypes import comma_floats, comma_ints, positive_float, positive_int
from largemeta.errors import UserError

__all__ = ["comma_floats", "comma_ints", "positive_float", "positive_int"]


def jsonable(value: Any) -> Any:
    """Plain JSON values: NaN/inf become null (a diverged run is reported, never dropped)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return value


def print_json(value: Any) -> None:
    json.dump(jsonable(value), sys.stdout, allow_nan=False)
    sys.stdout.write("\n")


def check_device_flag(args: Any) -> None:
    """A ``--device`` given on the command line, checked before any work: a bad name or a device this machine
    lacks is one line naming the flag (:func:`largemeta.devices.resolve_device`)."""
    from largemeta.devices import resolve_device

    if getattr(args, "device", None) is not None:
        resolve_device(args.device, what="--device")


def output_dir(path: str | None) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {path!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create --out folder {path!r}: {err.strerror}") from None
    return out
