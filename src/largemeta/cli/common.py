"""Helpers shared by the command modules: JSON output, output folders, argument types."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from largemeta.errors import UserError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (valid: an integer >= 1)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (valid: an integer >= 1)")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (valid: a number > 0)") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (valid: a finite number > 0)")
    return value


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
