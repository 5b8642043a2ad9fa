"""Where datasets are kept, and how files get there safely.

The cache directory is, in order of precedence: an explicit ``data_dir`` (the CLI's ``--data-dir``), the
environment variable ``LARGEMETA_DATA_DIR``, then the operating system's per-user cache folder as
``platformdirs.user_cache_dir("largemeta")`` reports it: ``$XDG_CACHE_HOME/largemeta`` or
``~/.cache/largemeta`` on Linux, ``~/Library/Caches/largemeta`` on macOS, ``%LOCALAPPDATA%\\largemeta\\Cache``
on Windows.

Layout::

    <cache>/downloads/<archive>        verified package archives, kept so a re-conversion needs no network
    <cache>/datasets/<name>/data.npz   x_train, y_train, x_test, y_test as uint8 / int64 arrays
    <cache>/datasets/<name>/meta.json  class names, counts, splits; written last, so its presence marks
                                       a complete conversion

Every file is written to a temporary name in the same directory, fsync'd and renamed into place, so an
interrupted fetch never leaves a half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import platformdirs
from tqdm import tqdm

from largemeta.errors import UserError

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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(what: str, actual: str, expected: str | None) -> None:
    """``UserError`` when ``expected`` is given and differs from ``actual``."""
    if expected is not None and actual != expected:
        raise UserError(f"sha256 mismatch for {what}: got {actual}, expected {expected}; refusing to use it")


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: Path, obj: object) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr that stays quiet when stderr is not a terminal (logs, CI, tests)."""
    kwargs.setdefault("disable", not sys.stderr.isatty())
    kwargs.setdefault("leave", False)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)
