"""A run folder's own records: the copy of its config, its identity (which run it is) and its metrics log.

What the folder holds is :mod:`largemeta.runs.names`'s; who may write it, :mod:`largemeta.runs.claim`'s; its
checkpoint, :mod:`largemeta.runs.checkpoint`'s.
"""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path
from typing import Any

from largemeta._version import __version__
from largemeta.errors import UserError
from largemeta.files import atomic_write_text
from largemeta.runs.names import CHECKPOINT, CONFIG, RUN


def read_config(run_dir: Path) -> dict[str, Any]:
    """The human-readable copy of a run's resolved config (``config.json``); --resume reads the
    checkpoint's."""
    config_file = Path(run_dir) / CONFIG
    if not config_file.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run folder: no {CONFIG} there")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise UserError(f"{str(run_dir)!r}: {CONFIG} is corrupt") from None
    if not isinstance(config, dict):
        raise UserError(f"{str(run_dir)!r}: {CONFIG} is not a JSON object")
    return config


# Identity -----------------------------------------------------------------------------------------------
def new_identity(algo: str, seed: int) -> dict[str, Any]:
    """A new run's identity: a random id, what it trains and when it started."""
    return {
        "run_id": uuid.uuid4().hex,
        "algo": algo,
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "largemeta": __version__,
    }


def describe(identity: dict[str, Any] | None) -> str:
    if not identity:
        return "a run of version 0.1 (no identity)"
    return f"run {str(identity.get('run_id'))[:8]} ({identity.get('algo')}, seed {identity.get('seed')})"


def recorded_identity(run_dir: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads((Path(run_dir) / RUN).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return recorded if isinstance(recorded, dict) and isinstance(recorded.get("run_id"), str) else None


def check_identity(run_dir: Path, identity: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, Any]:
    """The identity to continue a checkpoint (``identity``, ``config``: what it records) with; refuses a
    checkpoint that belongs to another run than the folder's (``run.json``). A version 0.1 checkpoint (no
    identity, no run.json) is adopted: it gets one."""
    recorded = recorded_identity(run_dir)
    if recorded is not None and (identity is None or identity.get("run_id") != recorded["run_id"]):
        raise UserError(
            f"{str(Path(run_dir) / CHECKPOINT)!r} is the checkpoint of {describe(identity)}, not of this "
            f"folder's {describe(recorded)} ({RUN}); put the folder's own checkpoint back, or resume the "
            "folder it came from"
        )
    if identity is None:
        identity = {**new_identity(str(config.get("algo")), int(config.get("seed", 0))), "created": None}
    return identity


def write_identity(run_dir: Path, identity: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / RUN, json.dumps(identity, indent=2) + "\n")


def cut_metrics(path: Path, step: int) -> dict[str, Any]:
    """Cut ``metrics.jsonl`` back to the lines of steps <= ``step`` (those after the checkpoint will be
    logged again), dropping a line torn by a crash; returns the last line kept (empty: none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    raw = path.read_bytes()
    kept: list[bytes] = []
    last: dict[str, Any] = {}
    for line in raw.splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
            last = record
    if len(b"".join(kept)) != len(raw):
        atomic_write_text(path, b"".join(kept).decode())
    return last
