"""Where datasets are kept, and how files get there safely.

The cache directory is, in order of precedence: an explicit ``data_dir`` (the CLI's ``--data-dir``), the
environment variable ``LARGEMETA_DATA_DIR``, then the operating system's per-user cache folder as
``platformdirs.user_cache_dir("largemeta")`` reports it: ``$XDG_CACHE_HOME/largemeta`` or
``~/.cache/largemeta`` on Linux, ``~/Library/Caches/largemeta`` on macOS, ``%LOCALAPPDATA%\\largemeta\\Cache``
on Windows.

Layout::

    <cache>/downloads/<archive>           verified package archives, kept so a re-conversion needs no network
    <cache>/datasets-v2/<name>/*.npy      converted datasets, one verified array per file
                                          (:mod:`largemeta.data.store.cached`, which also reads version 0.1's
                                          ``<cache>/datasets/<name>/data.npz``)
    <cache>/indexes/<key>/                listings of bring-your-own folders
                                          (:mod:`largemeta.data.store.index`)
    <cache>/byo-v2/<key>/*.npy            a bring-your-own .npz's arrays, written once to stream from
                                          (:func:`largemeta.data.sources.datasets.memory_mapped`; key: a
                                          hash of the file's path, size and mtime)

Every file is written to a temporary name in the same directory, fsync'd and renamed into place
(:func:`largemeta.files.atomic_open`, with the user's umask), so an interrupted fetch never leaves a
half-written file under a final name. Conversions of one dataset are
serialised across processes by a lock file (:func:`largemeta.files.wait_for_lock`).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import platformdirs

from largemeta.errors import UserError
from largemeta.files import atomic_open

DATA_DIR_ENV = "LARGEMETA_DATA_DIR"
APP_NAME = "largemeta"


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory (not created here)."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    # appauthor=False: no vendor folder above ours on Windows (else largemeta\largemeta\Cache).
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)).expanduser()


def check_digest(what: str, actual: str, expected: str | None, algorithm: str = "sha256") -> None:
    """``UserError`` when ``expected`` is given and differs from ``actual`` (digests by ``algorithm``)."""
    if expected is not None and actual != expected:
        raise UserError(
            f"{algorithm} mismatch for {what}: got {actual}, expected {expected}; refusing to use it"
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def unwritable(cache: Path, err: OSError, what: str = "") -> UserError:
    """The one-line error for a cache folder that cannot be written (read-only, a file, full disk)."""
    reason = err.strerror or str(err)
    if isinstance(err, FileExistsError) or err.errno == errno.ENOTDIR:
        reason = "a file stands where a folder must be"
    return UserError(
        f"{what}cannot write to the dataset cache {str(cache)!r} ({reason}); point --data-dir or "
        f"${DATA_DIR_ENV} at a writable folder"
    )


def ensure_writable(cache: Path, what: str = "") -> None:
    """Prove that files can be created in ``cache`` (or, while it does not exist yet, in its nearest existing
    ancestor) without leaving anything behind; else :func:`unwritable`'s one line."""
    existing = cache
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(existing))
        fd, tmp = tempfile.mkstemp(prefix=".largemeta-probe-", dir=existing)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise unwritable(cache, err, what) from None
