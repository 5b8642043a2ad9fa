"""What a training run's checkpoint holds, and reading it back from a run folder in either format.

A run's checkpoint is a set of named entries (:mod:`largemeta.checkpoint`) plus the run's description
(``info``)::

    "shared"        the learner's state common to all tasks: step, φ, the outer optimizer (joint training:
                    the body's optimizer state)
    "task/<i>"      meta-train task i (index in the config's task list): "params" (θ: shared keys and head),
                    "inner_state", "meta" (what the meta-gradient accumulated along the trajectory, e.g.
                    Leap's path) and "task" (sampler and BatchNorm state)
  with a task pool (tasks_per_trajectory > 0), instead of "task/<i>":
    "slot/<s>"      slot s's trajectory: "params", "inner_state", "meta"
    "pooltask/<p>"  pool task p's own state: "private" (its head), "task"; absent while never drawn
    "pool"          the draw: generator, queue, assignment (each slot's pool task)

    info: config (the resolved config), identity (run id, algorithm, seed), task_names, world (ranks that
          wrote it), data_placement

:func:`read` locates and checks the latest checkpoint of a run folder — the sharded manifest
(``largemeta-sharded-checkpoint-v2``), else version 0.1's ``checkpoint.pt`` (``largemeta-checkpoint-v1``),
converted on the way in to the same entries — without loading its tensors; :meth:`CheckpointOnDisk.load`
then reads the entries a caller needs. Who writes and loads which entry is the trainer's
(:mod:`largemeta.train.state`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from largemeta.checkpoint import legacy, store
from largemeta.errors import UserError
from largemeta.files import contents
from largemeta.runs.folder import check_identity, recorded_identity
from largemeta.runs.names import CHECKPOINT, LEGACY_CHECKPOINT, RUN, listing

SHARED = "shared"
POOL = "pool"
POOL_TASK = "pooltask/"


def task_entry(index: int) -> str:
    return f"task/{index}"


def slot_entry(slot: int) -> str:
    return f"slot/{slot}"


def pool_task_entry(task: int) -> str:
    return f"{POOL_TASK}{task}"


@dataclass(frozen=True)
class CheckpointOnDisk:
    """A run folder's latest checkpoint, located and checked, not loaded yet: what it records (``step``,
    ``info``, the names of its ``entries``) is read without its tensors."""

    path: Path
    format: str
    """``largemeta-sharded-checkpoint-v2``, or ``largemeta-checkpoint-v1`` (version 0.1's single file)."""
    step: int
    info: dict[str, Any]
    entries: tuple[str, ...]
    _load: Callable[[list[str]], dict[str, Any]]
    recovered: str | None = None
    """Why this is not the checkpoint ``checkpoint.json`` names (its folder's own copy of the manifest was
    used: the run's manifest is missing, or older than the folder); None when it is."""
    folder: Path | None = None
    """The checkpoint's folder (sharded format)."""

    def load(self, keys: Iterable[str] | None = None) -> dict[str, Any]:
        """The entries ``keys`` (default: all), on the CPU; only the files holding them are read."""
        return self._load(list(self.entries) if keys is None else list(keys))

    @property
    def config(self) -> dict[str, Any]:
        return self.info["config"]

    @property
    def identity(self) -> dict[str, Any] | None:
        return self.info.get("identity")

    @property
    def data_placement(self) -> str | None:
        return self.info.get("data_placement")

    @property
    def pooled(self) -> bool:
        """Whether a task pool wrote it."""
        return POOL in self.entries

    def check_fits(self, task_names: list[str], pooled: bool) -> None:
        """A one-line error unless the checkpoint holds these meta-train tasks, with a pool or without one as
        the run has."""
        if self.info.get("task_names") != task_names:
            raise UserError(
                f"checkpoint tasks {self.info.get('task_names')} do not match the config's {task_names}"
            )
        if pooled != self.pooled:
            had = "with" if self.pooled else "without"
            raise UserError(
                f"the checkpoint was written {had} a task pool (tasks_per_trajectory); this run differs"
            )


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run folder holds a checkpoint (either format), or a checkpoint folder without its manifest
    (to recover, never to overwrite)."""
    run_dir = Path(run_dir)
    return (
        (run_dir / CHECKPOINT).is_file()
        or (run_dir / LEGACY_CHECKPOINT).is_file()
        or bool(checkpoint_folders(run_dir))
    )


def checkpoint_folders(run_dir: Path) -> list[str]:
    """Checkpoint folders (not temporary ones) in a run folder, by name."""
    try:
        names = contents(run_dir)
    except OSError:
        return []
    return [n for n in names if not n.startswith(".") and store.folder_step(n) is not None]


def no_checkpoint(run_dir: Path) -> UserError:
    """The one-line error for a folder with no checkpoint to resume or read."""
    if not Path(run_dir).is_dir():
        return UserError(f"run folder {str(run_dir)!r} does not exist")
    folders = checkpoint_folders(Path(run_dir))
    if folders:
        return UserError(
            f"{str(run_dir)!r} holds {listing(folders)} but no {CHECKPOINT} naming a complete checkpoint of "
            f"this run, and none of them is one to recover; nothing was deleted: put the run's {CHECKPOINT} "
            "back"
        )
    if (Path(run_dir) / RUN).is_file():
        return UserError(
            f"{str(run_dir)!r} has no checkpoint yet: its run stopped before writing one; "
            f"start it again with --out {run_dir}"
        )
    return UserError(f"{str(run_dir)!r} is not a run folder: no {CHECKPOINT} there")


def read(run_dir: Path) -> CheckpointOnDisk:
    """The run folder's checkpoint: the sharded manifest (verified), else a version-0.1 ``checkpoint.pt``
    (read whole and converted to entries); checked to record what a run's checkpoint records (a one-line
    error otherwise, naming the file)."""
    run_dir = Path(run_dir)
    if store.exists(run_dir) or not (run_dir / LEGACY_CHECKPOINT).is_file():
        return _locate(run_dir)
    path = run_dir / LEGACY_CHECKPOINT
    step, info, entries = legacy.read(path)
    return _checked(
        CheckpointOnDisk(
            path, legacy.FORMAT, step, info, tuple(entries), lambda keys: _pick(entries, keys, path)
        )
    )


def _on_disk(manifest: store.Manifest, recovered: str | None = None) -> CheckpointOnDisk:
    return _checked(
        CheckpointOnDisk(
            manifest.path,
            store.FORMAT,
            manifest.step,
            manifest.info,
            tuple(manifest.entries),
            manifest.load,
            recovered,
            manifest.folder,
        )
    )


def _locate(run_dir: Path) -> CheckpointOnDisk:
    """The sharded checkpoint ``--resume`` continues: the one ``checkpoint.json`` names, verified (its sha256,
    then that it is this folder's run's: ``run.json``) — unless a newer complete checkpoint folder of the same
    run lies beside it (a manifest put back by hand, or a save killed between publishing its folder and its
    manifest), or the manifest is missing: then the newest complete folder, with a note saying so. A damaged
    or foreign manifest is refused in one line that names the newest complete checkpoint of this run and how
    to continue from it; nothing is deleted."""
    path = run_dir / CHECKPOINT
    recorded = recorded_identity(run_dir)
    on_disk, error = None, None
    if path.exists():
        try:
            on_disk = _on_disk(store.read_manifest(run_dir))
            check_identity(run_dir, on_disk.identity, on_disk.config)
        except UserError as err:
            on_disk, error = None, err
    owner = recorded or (on_disk.identity if on_disk is not None else None)
    run_id = owner.get("run_id") if owner else None
    candidates = [
        m
        for m in store.complete_folders(run_dir)
        if run_id is None or (m.info.get("identity") or {}).get("run_id") == run_id
    ]
    newest = candidates[0] if candidates else None
    if error is not None:
        if newest is None:
            raise error
        raise UserError(
            f"{error}; nothing was deleted: the newest complete checkpoint of this run is "
            f"{str(newest.folder)!r} (step {newest.step}); to continue from it, move {CHECKPOINT} aside "
            f"(mv {shlex.quote(str(path))} {shlex.quote(str(path) + '.bad')}) and resume again"
        )
    if on_disk is None:
        if newest is None:
            raise no_checkpoint(run_dir)
        if (
            run_id is None
            and len({str((m.info.get("identity") or {}).get("run_id")) for m in candidates}) > 1
        ):
            raise UserError(
                f"{str(run_dir)!r} has no {CHECKPOINT} and no {RUN}, and holds complete checkpoints of "
                f"several runs; nothing was deleted: put the run's {CHECKPOINT} back"
            )
        note = (
            f"{str(path)!r} is missing: recovered from {str(newest.folder)!r} (step {newest.step}), the "
            "newest complete checkpoint of this run"
        )
        return _on_disk(newest, note)
    if newest is not None and newest.step > on_disk.step:
        note = (
            f"{str(path)!r} names step {on_disk.step}, but {str(newest.folder)!r} is a newer complete "
            f"checkpoint of this run: continuing from step {newest.step}"
        )
        return _on_disk(newest, note)
    return on_disk


def _checked(on_disk: CheckpointOnDisk) -> CheckpointOnDisk:
    for key, kind in (("config", dict), ("task_names", list)):
        if not isinstance(on_disk.info.get(key), kind):
            raise UserError(
                f"checkpoint {str(on_disk.path)!r} is incomplete: {key} is missing or not a {kind.__name__} "
                "(not a whole largemeta checkpoint)"
            )
    if "identity" in on_disk.info and not isinstance(on_disk.info["identity"], dict):
        raise UserError(f"checkpoint {str(on_disk.path)!r} is incomplete: its identity is not a mapping")
    if SHARED not in on_disk.entries:
        raise UserError(
            f"checkpoint {str(on_disk.path)!r} is incomplete: {SHARED} is missing (not a whole checkpoint)"
        )
    return on_disk


def _pick(entries: dict[str, Any], keys: list[str], path: Path) -> dict[str, Any]:
    missing = [k for k in keys if k not in entries]
    if missing:
        raise UserError(f"checkpoint {str(path)!r} has no entry {missing[0]!r}")
    return {k: entries[k] for k in keys}


def read_phi(run_dir: Path) -> tuple[CheckpointOnDisk, dict[str, Any]]:
    """A run folder's checkpoint and its φ (the ``phi`` of entry "shared"), without the tasks' entries."""
    on_disk = read(run_dir)
    return on_disk, on_disk.load([SHARED])[SHARED]["phi"]
