"""Taking a folder for one command: refuse a folder holding something else before anything is written, then
lock it (:func:`largemeta.files.lock_folder`) for as long as the command writes there.

Every command that writes a folder takes it here — ``train`` (its run folder), ``evaluate --out``, the
experiments, ``report`` — each with its own *accept* policy (what the folder may hold already). A
:class:`Claim` is a context manager: leaving the block releases the folder; leaving it on an exception
abandons it (a folder created for nothing is removed again). An object that holds a folder for its lifetime
enters the claim into a :class:`contextlib.ExitStack` and keeps it with ``pop_all()`` once it is built.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from largemeta import console
from largemeta.errors import UserError
from largemeta.files import FolderLock, contents, lock_folder, sweep_temporaries
from largemeta.runs.checkpoint import checkpoint_folders, no_checkpoint
from largemeta.runs.names import CHECKPOINT, CONFIG, LEGACY_CHECKPOINT, RESULTS, RUN, is_run_file, listing

Accept = Callable[[Path, list[str]], None]
"""``accept(folder, names)``: raises :class:`UserError` for a folder holding something the command must not
write over (``names``: its contents)."""


@dataclass
class Claim:
    """A folder this process writes: locked until released (leaving the ``with`` block)."""

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

    def __enter__(self) -> Claim:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.release()
        else:
            self.abandon()


def claim(folder: Path, accept: Accept, *, what: str = "folder", create: bool = True) -> Claim:
    """Lock ``folder`` for this command after ``accept(folder, names)`` has agreed to what it holds.

    ``accept`` is asked before anything is written (the folder is not even created) and again once the lock
    is held, when no one else can write. Temporary files a killed writer left are swept then."""
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


# accept policies ----------------------------------------------------------------------------------------
def accept_new_run(folder: Path, names: list[str]) -> None:
    """A new run goes into an empty folder, or one holding a run that never wrote a checkpoint."""
    if CHECKPOINT in names or LEGACY_CHECKPOINT in names or checkpoint_folders(folder):
        raise UserError(f"{str(folder)!r} already holds a run; use --resume {folder} or another --out")
    started = RUN in names or (CONFIG in names and _is_run_config(folder / CONFIG))
    if names and not (started and all(is_run_file(n) for n in names)):
        raise UserError(
            f"{str(folder)!r} is not empty and is not a largemeta run folder (it holds {listing(names)}); "
            "nothing was written: pass a new or empty folder"
        )


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is a run's config.json (a run stopped before its run.json, by version 0.2)."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(config, dict) and {"suite", "algo", "steps", "seed"} <= config.keys()


def accept_run(folder: Path, names: list[str]) -> None:
    """--resume needs a run folder with a checkpoint."""
    if CHECKPOINT not in names and LEGACY_CHECKPOINT not in names and not checkpoint_folders(folder):
        raise no_checkpoint(folder)


def accept_results(kind: str) -> Accept:
    """An ``evaluate --out`` folder: empty (results.json is written once, never overwritten)."""

    def accept(folder: Path, names: list[str]) -> None:
        names = [n for n in names if n != console.LOG_FILE]  # an attempt that stopped before its results
        if RESULTS in names:
            raise UserError(
                f"{str(folder)!r} already holds {RESULTS} (of {kind} or another command); pass another --out"
            )
        if names:
            raise UserError(
                f"{str(folder)!r} is not empty (it holds {listing(names)}); nothing was written: "
                "pass a new or empty folder"
            )

    return accept


def accept_anything(folder: Path, names: list[str]) -> None:
    """A folder read while others must not write it (its files are checked by whoever reads them)."""
