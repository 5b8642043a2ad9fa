"""Run folders and trained weights: where a run keeps its files, who may write them, and how φ is read back.

A run folder (``largemeta train --out RUN``) holds::

    checkpoint.json  the latest checkpoint's manifest (largemeta.sharded_checkpoint), naming its folder
                     checkpoint-NNNNNNNN/ (one file per rank that wrote it); with the resolved config and the
                     run's identity it is the source of truth for --resume
    checkpoint.pt    the checkpoint of a run written by version 0.1 (one file; read, superseded on resume)
    config.json      the resolved config (a human-readable copy; never read back)
    run.json         the run's identity {run_id, algo, seed, created} (a copy; it tells a foreign checkpoint)
    metrics.jsonl    one JSON line per log step (cut back to the checkpoint's step on resume)
    log.txt          what the commands that trained it printed (appended on resume)
    trackers.json    the run's experiment-tracker runs and the last step each was sent (largemeta.trackers)
    tensorboard/     optional event files

A results folder (``evaluate --out``, the experiments) holds ``results.json``. :func:`claim` takes a folder
for one command: it refuses a folder holding something else before anything is written, then locks it
(:func:`largemeta.files.lock_folder`) for the life of the command.

φ can be read back from a run folder (its checkpoint) or from a ``.safetensors`` file written by
``largemeta export``; :func:`fit_to_body` is the one check that such a φ fits a body, tensor by tensor.
This module sits below both the trainer and the meta-test protocol.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from largemeta import __version__, checkpoint, console, sharded_checkpoint, trackers
from largemeta.core.params import Params
from largemeta.errors import UserError
from largemeta.files import FolderLock, atomic_write_text, contents, lock_folder, sweep_temporaries
from largemeta.trackers import backends

CHECKPOINT_NAME = "checkpoint"
CHECKPOINT = f"{CHECKPOINT_NAME}.json"
"""The latest checkpoint's manifest (see :mod:`largemeta.sharded_checkpoint`)."""
LEGACY_CHECKPOINT = "checkpoint.pt"
"""Version 0.1's single-file checkpoint (:mod:`largemeta.checkpoint`), still read."""
CONFIG = "config.json"
RUN = "run.json"
METRICS = "metrics.jsonl"
TENSORBOARD = backends.TENSORBOARD
RESULTS = "results.json"
RUN_FILES = frozenset(
    {CHECKPOINT, LEGACY_CHECKPOINT, CONFIG, RUN, METRICS, TENSORBOARD, console.LOG_FILE, trackers.STATE}
)
"""What a run folder may hold, beside its checkpoint folders."""
_CHECKPOINT_FOLDER = re.compile(rf"^\.?{CHECKPOINT_NAME}-\d+(\.tmp)?$")
"""A checkpoint's folder, or one being written (:mod:`largemeta.sharded_checkpoint`)."""


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run folder holds a checkpoint (either format)."""
    return (Path(run_dir) / CHECKPOINT).is_file() or (Path(run_dir) / LEGACY_CHECKPOINT).is_file()


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


# The checkpoint's layout as far as readers outside the trainer rely on it: key -> (type, what it is).
_LAYOUT: dict[tuple[str, ...], type] = {
    ("config",): dict,
    ("step",): int,
    ("shared",): dict,
    ("shared", "phi"): dict,
    ("task_names",): list,
}


def no_checkpoint(run_dir: Path) -> UserError:
    """The one-line error for a folder with no checkpoint to resume or read."""
    if not Path(run_dir).is_dir():
        return UserError(f"run folder {str(run_dir)!r} does not exist")
    if (Path(run_dir) / RUN).is_file():
        return UserError(
            f"{str(run_dir)!r} has no checkpoint yet: its run stopped before writing one; "
            f"start it again with --out {run_dir}"
        )
    return UserError(f"{str(run_dir)!r} is not a run folder: no {CHECKPOINT} there")


def read_legacy_checkpoint(run_dir: Path) -> dict[str, Any]:
    """A version-0.1 run folder's ``checkpoint.pt``, checked to hold what a checkpoint holds (a one-line error
    otherwise)."""
    path = Path(run_dir) / LEGACY_CHECKPOINT
    if not path.is_file():
        raise no_checkpoint(run_dir)
    state = checkpoint.load(path, map_location="cpu")
    for keys, kind in _LAYOUT.items():
        value: Any = state
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(
                f"checkpoint {str(path)!r} is incomplete: {'.'.join(keys)} is missing or not a "
                f"{kind.__name__} (not a whole largemeta checkpoint)"
            )
    if not isinstance(state.get("tasks"), list):
        raise UserError(f"checkpoint {str(path)!r} is incomplete: it holds no task state")
    if not all(isinstance(v, torch.Tensor) for v in state["shared"]["phi"].values()):
        raise UserError(f"checkpoint {str(path)!r} is incomplete: shared.phi holds something not a tensor")
    if "identity" in state and not isinstance(state["identity"], dict):
        raise UserError(f"checkpoint {str(path)!r} is incomplete: its identity is not a mapping")
    return state


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


def _recorded_identity(run_dir: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads((Path(run_dir) / RUN).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return recorded if isinstance(recorded, dict) and isinstance(recorded.get("run_id"), str) else None


def check_identity(run_dir: Path, identity: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, Any]:
    """The identity to continue a checkpoint (``identity``, ``config``: what it records) with; refuses a
    checkpoint that belongs to another run than the folder's (``run.json``). A version 0.1 checkpoint (no
    identity, no run.json) is adopted: it gets one."""
    recorded = _recorded_identity(run_dir)
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


# Metrics ------------------------------------------------------------------------------------------------
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


# Claiming a folder --------------------------------------------------------------------------------------
@dataclass
class Claim:
    """A folder this process writes: locked until :meth:`release` (or :meth:`abandon`)."""

    folder: Path
    lock: FolderLock
    created: bool

    def release(self) -> None:
        self.lock.release()

    def abandon(self) -> None:
        """Give the folder back as it was found: a folder created for nothing is removed again."""
        self.lock.release()
        if self.created:
            try:
                self.folder.rmdir()  # only if empty: nothing was written
            except OSError:
                pass


def claim(
    folder: Path, accept: Callable[[Path, list[str]], None], *, what: str = "folder", create: bool = True
) -> Claim:
    """Lock ``folder`` for this command after ``accept(folder, names)`` has agreed to what it holds.

    ``accept`` raises :class:`UserError` for a folder holding something else; it is asked before anything is
    written (the folder is not even created) and again once the lock is held, when no one else can write.
    Temporary files a killed writer left are swept then."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{str(folder)!r} exists and is not a folder")
    if folder.is_dir():
        accept(folder, _contents(folder))
    elif not create:
        raise UserError(f"{what} {str(folder)!r} does not exist")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write {what} {str(folder)!r}: {err.strerror or err}") from None
    try:
        lock = lock_folder(folder)
    except BaseException:
        if created:
            try:
                folder.rmdir()  # only if empty: another process may have made it too, and holds it
            except OSError:
                pass
        raise
    taken = Claim(folder, lock, created)
    try:
        accept(folder, _contents(folder))
        sweep_temporaries(folder)
    except BaseException:
        taken.abandon()
        raise
    return taken


def _contents(folder: Path) -> list[str]:
    try:
        return contents(folder)
    except OSError as err:
        raise UserError(f"cannot read folder {str(folder)!r}: {err.strerror or err}") from None


def _listing(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _is_run_file(name: str) -> bool:
    return name in RUN_FILES or bool(_CHECKPOINT_FOLDER.match(name))


def accept_new_run(folder: Path, names: list[str]) -> None:
    """A new run goes into an empty folder, or one holding a run that never wrote a checkpoint."""
    if CHECKPOINT in names or LEGACY_CHECKPOINT in names:
        raise UserError(f"{str(folder)!r} already holds a run; use --resume {folder} or another --out")
    if names and not (RUN in names and all(_is_run_file(n) for n in names)):
        raise UserError(
            f"{str(folder)!r} is not empty and is not a largemeta run folder (it holds {_listing(names)}); "
            "nothing was written: pass a new or empty folder"
        )


def accept_run(folder: Path, names: list[str]) -> None:
    """--resume needs a run folder with a checkpoint."""
    if CHECKPOINT not in names and LEGACY_CHECKPOINT not in names:
        raise no_checkpoint(folder)


def accept_results(kind: str) -> Callable[[Path, list[str]], None]:
    """An ``evaluate --out`` folder: empty (results.json is written once, never overwritten)."""

    def accept(folder: Path, names: list[str]) -> None:
        names = [n for n in names if n != console.LOG_FILE]  # an attempt that stopped before its results
        if RESULTS in names:
            raise UserError(
                f"{str(folder)!r} already holds {RESULTS} (of {kind} or another command); pass another --out"
            )
        if names:
            raise UserError(
                f"{str(folder)!r} is not empty (it holds {_listing(names)}); nothing was written: "
                "pass a new or empty folder"
            )

    return accept


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


# Trained weights ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainedWeights:
    """φ read from a run folder or an exported file, and the config of the run that trained it."""

    source: str
    phi: Params
    config: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    """Cumulative inner steps per task that trained φ (when recorded)."""
    channels: int | None = None
    """Input channels of the body, when recorded (exports since 0.2)."""

    @property
    def model(self) -> str:
        return str(self.config.get("model", "convnet"))

    @property
    def in_channels(self) -> int | None:
        """Input channels of the body: as recorded, else read off its first convolution (None when that is
        not 1 or 3: then the first convolution is not there, and fitting φ to the body names it)."""
        if self.channels in (1, 3):
            return self.channels
        conv = next((v for v in self.phi.values() if v.dim() == 4), None)
        return int(conv.shape[1]) if conv is not None and conv.shape[1] in (1, 3) else None


def check_finite(tensors: Params, what: str) -> None:
    """A one-line error naming the first tensor holding NaN or inf."""
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise UserError(f"{what}: tensor {k!r} holds NaN or inf; refusing to use it")


def read_manifest(run_dir: Path) -> sharded_checkpoint.Manifest:
    """A run folder's checkpoint manifest, verified and checked to record what a run's checkpoint records:
    the config, the task names and the "shared" entry (φ); a one-line error otherwise."""
    manifest = sharded_checkpoint.read_manifest(run_dir, CHECKPOINT_NAME)
    path = Path(run_dir) / CHECKPOINT
    for key, kind in (("config", dict), ("task_names", list)):
        if not isinstance(manifest.info.get(key), kind):
            raise UserError(
                f"checkpoint {str(path)!r} is incomplete: {key} is missing or not a {kind.__name__} "
                "(not a whole largemeta checkpoint)"
            )
    if "identity" in manifest.info and not isinstance(manifest.info["identity"], dict):
        raise UserError(f"checkpoint {str(path)!r} is incomplete: its identity is not a mapping")
    if "shared" not in manifest.entries:
        raise UserError(f"checkpoint {str(path)!r} is incomplete: shared is missing (not a whole checkpoint)")
    return manifest


def load_weights(source: str | Path) -> TrainedWeights:
    """φ from a run folder (its checkpoint) or a ``.safetensors`` file written by ``largemeta export``;
    refused when any of it is not finite."""
    path = Path(source)
    if path.is_dir() and (path / CHECKPOINT).is_file():
        manifest = read_manifest(path)
        shared = sharded_checkpoint.load(path, ["shared"], manifest=manifest, name=CHECKPOINT_NAME)["shared"]
        weights = TrainedWeights(str(source), shared["phi"], manifest.info.get("config") or {}, manifest.step)
    elif path.is_dir():
        state = read_legacy_checkpoint(path)
        weights = TrainedWeights(str(source), state["shared"]["phi"], state["config"], int(state["step"]))
    elif path.suffix == ".safetensors" and path.is_file():
        weights = _load_safetensors(path, str(source))
    else:
        raise UserError(f"{str(source)!r} is not a run folder or an existing .safetensors file")
    check_finite(weights.phi, f"φ of {str(source)!r}")
    return weights


def _load_safetensors(path: Path, source: str) -> TrainedWeights:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{source!r} is not a readable .safetensors file ({err})") from None
    if "config" not in meta:
        raise UserError(f"{source!r} has no largemeta metadata (write it with 'largemeta export')")
    try:
        config = json.loads(meta["config"])
    except (ValueError, RecursionError):
        config = None
    if not isinstance(config, dict):
        raise UserError(
            f"{source!r}: its 'config' metadata is not a JSON object (write it with 'largemeta export')"
        )
    step = int(meta["step"]) if meta.get("step", "").isdigit() else None
    channels = int(meta["in_channels"]) if meta.get("in_channels", "") in ("1", "3") else None
    return TrainedWeights(source, tensors, config, step, channels)


def fit_to_body(phi: Params, body_params: Params, *, what: str, model: str) -> Params:
    """``phi`` restricted to the body's parameters and cast to their dtypes, after checking that every one of
    them is there with its shape; a one-line :class:`UserError` naming the first that is not."""
    for k, v in body_params.items():
        if k not in phi:
            raise UserError(f"{what} lacks tensor {k!r} of model {model} (shape {tuple(v.shape)})")
        if phi[k].shape != v.shape:
            raise UserError(
                f"{what} does not fit model {model}: tensor {k!r} has shape "
                f"{tuple(phi[k].shape)}, the model needs {tuple(v.shape)}"
            )
    return {k: phi[k].detach().clone().to(v.dtype) for k, v in body_params.items()}
