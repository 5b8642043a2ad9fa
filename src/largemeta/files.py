"""Files and folders a command writes: atomic writes with the user's umask, one writer per folder.

:func:`atomic_write` writes to a temporary file beside the target, fsyncs it, renames it over the target and
fsyncs the folder: a crash at any moment leaves the previous file or the new one, never a torn file. The file
gets the permissions ``open()`` would give (0666 less the umask), not ``mkstemp``'s 0600, so a group on a
shared cluster can read checkpoints and results. The temporary file is removed on every way out; one left by
a process killed with SIGKILL is removed by :func:`sweep_temporaries` when the next writer takes the folder.

:func:`lock_folder` takes an exclusive ``flock`` on ``FOLDER/.largemeta.lock`` for as long as the process
holds it (the kernel releases it when the process dies, so kill -9 never leaves a stale lock); a second
process is refused in one line naming the holder's PID. On NFS, ``flock`` is emulated with byte-range locks
where the server supports them: best effort. The lock is re-entrant within a process (an experiment holds its
folder while a trainer holds a run folder inside it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from largemeta.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK = ".largemeta.lock"
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
"""Names :func:`atomic_write` gives its temporary files: ``.NAME.XXXXXXXX.tmp``."""


def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A temporary file beside ``path`` (permissions 0666 less the umask); on leaving the block it is fsynced
    and renamed over ``path``, and the folder fsynced. On any exception the temporary file is removed and
    ``path`` is untouched. ``OSError`` propagates as it is (:func:`atomic_write` turns it into one line)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # make the rename durable (some file systems cannot fsync a folder: best effort there)
    with contextlib.suppress(OSError):
        fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make the creations, renames and removals in ``folder`` durable (``OSError`` where the file system
    cannot fsync a folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(binary_file)`` on a temporary file, then atomically replace ``path`` with it
    (:func:`atomic_open`); a failure is one line saying the previous file is intact."""
    existed = os.path.lexists(path)
    try:
        with atomic_open(path) as fh:
            write(fh)
    except OSError as err:
        if not Path(path).parent.is_dir():
            kept = (
                f"its folder {str(Path(path).parent)!r} does not exist (create it first); nothing was written"
            )
        else:
            kept = "the previous file is intact" if existed else "nothing was written"
        raise UserError(f"cannot write {str(path)!r}: {err.strerror or err}; {kept}") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of :func:`atomic_write`'s temporary files."""
    return bool(_TEMPORARY.match(name))


def sweep_temporaries(folder: Path) -> list[Path]:
    """Remove temporary files that a killed writer left in ``folder`` (call with the folder locked)."""
    removed = []
    for p in Path(folder).iterdir():
        if is_temporary(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def contents(folder: Path) -> list[str]:
    """Names in ``folder`` other than the lock file and temporaries: what a user would call its contents."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name != LOCK and not is_temporary(p.name))


class FolderInUse(UserError):
    """Another process holds the folder's lock."""


class _Held:
    def __init__(self, fd: int | None, path: Path) -> None:
        self.fd, self.path, self.count = fd, path, 1


_held: dict[str, _Held] = {}


class FolderLock:
    """This process's hold on a folder (see :func:`lock_folder`); ``release()`` once, or use ``with``."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder, self._key, self._released = Path(folder), key, False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        held = _held[self._key]
        held.count -= 1
        if held.count:
            return
        del _held[self._key]
        if held.fd is not None:
            try:
                held.path.unlink(missing_ok=True)  # while still holding it: see lock_folder's inode check
            except OSError:
                pass
            os.close(held.fd)

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(folder: Path) -> str:
    """Who holds ``folder``'s lock, as the holder wrote it (``process 123 on host (command)``)."""
    try:
        info = json.loads((Path(folder) / LOCK).read_text())
        where = f" on {info['host']}" if info.get("host") != socket.gethostname() else ""
        return f"process {int(info['pid'])}{where} ({str(info.get('command', ''))[:100]})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock_folder(folder: Path) -> FolderLock:
    """Take ``folder``'s lock (the folder must exist) or raise :class:`FolderInUse` naming the holder."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held:
        _held[key].count += 1
        return FolderLock(folder, key)
    path = folder / LOCK
    if fcntl is None:  # pragma: no cover
        _held[key] = _Held(None, path)
        return FolderLock(folder, key)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as err:
            raise UserError(f"cannot write folder {str(folder)!r}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUse(
                f"{str(folder)!r} is in use by {holder(folder)}; wait for it to finish or use another folder"
            ) from None
        except OSError as err:  # no lock support (some network file systems): go on, unlocked
            warnings.warn(
                f"cannot lock {str(folder)!r} ({err.strerror or err}); a second writer would not be refused",
                stacklevel=2,
            )
            os.close(fd)
            _held[key] = _Held(None, path)
            return FolderLock(folder, key)
        # The last holder unlinks the file on release: if it did so between our open and our flock, we hold a
        # lock on a file nobody else will see. Take the lock only on the file the name points at.
        try:
            st, now = os.fstat(fd), os.stat(path)
            same = (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["largemeta", *sys.argv[1:]]),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    _held[key] = _Held(fd, path)
    return FolderLock(folder, key)


@contextlib.contextmanager
def wait_for_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on the file ``path`` (created if needed) for the duration of the block,
    waiting for its turn — unlike :func:`lock_folder`, which refuses a folder another process holds.

    Two processes converting the same dataset into a shared cache take turns instead of interleaving their
    renames. Where no lock can be taken (a read-only cache, a platform without ``fcntl``) the block runs
    unlocked: the atomic renames still keep every file whole.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def sha256_bytes(data: bytes) -> str:
    """The sha256 of ``data``, as hex."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    return file_digest(path, "sha256")


def file_digest(path: Path, algorithm: str) -> str:
    """The ``hashlib`` digest ``algorithm`` (``sha256``, ``md5``) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
