"""Reading a results folder's ``results.json`` (``evaluate --out``, the experiments)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from largemeta.errors import UserError


def read_results(path: Path) -> dict[str, Any]:
    """A ``results.json`` as a JSON object (a one-line error naming the file otherwise)."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {str(path)!r}: {getattr(err, 'strerror', None) or err}") from None
    except (ValueError, RecursionError):
        raise UserError(f"{str(path)!r} is not valid JSON (a damaged results file)") from None
    if not isinstance(result, dict):
        raise UserError(f"{str(path)!r} is not a largemeta results file (not a JSON object)")
    return result
