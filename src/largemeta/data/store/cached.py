"""How a converted dataset is kept in the cache (format 2), verified before use, and how version 0.1's entries
are read.

Format 2, one folder per dataset::

    <cache>/datasets-v2/<name>/x_train.npy y_train.npy x_test.npy y_test.npy
    <cache>/datasets-v2/<name>/meta.json      {"format": 2, "arrays": {key: {"file", "bytes", "sha256",
                                              "shape", "dtype"}}, "class_names", "notes", "extra", ...}
    <cache>/datasets-v2/<name>/verified.json  each array's file signature when its sha256 last matched

Plain ``.npy`` files, so an entry can be memory-mapped (``np.load(mmap_mode="r")``) and a streamed task reads
only the rows it samples, at their offsets (:mod:`largemeta.data.tasks.stream`). ``meta.json`` is written
last: its presence marks a complete entry.

**Verification.** Every array is checked against the sha256 recorded when it was converted, before it is used.
Hashing a multi-GB array on every start would cost seconds per GB, so a successful check leaves a stamp in
``verified.json``: each file's size, mtime, ctime, inode and hash at that moment. An array whose stamp still
matches is trusted without hashing; any change made through the file system — a rewrite, a truncation, a bit
flipped in place, even with the mtime set back (a ctime cannot be set back) — breaks the stamp, and the next
use hashes the file again. What a stamp cannot see is damage below the file system (a disk that rots
silently); ``largemeta data fetch NAME --force`` rewrites an entry. Sizes are compared before any hashing, so
a truncated array is found at once. A stamp that cannot be written (a read-only cache) only means that the
next process hashes again. Arrays written here are stamped as they are written (hashed on the way out).

**Version 0.1** (format 1): ``<cache>/datasets/<name>/data.npz`` + ``meta.json``. It recorded no checksums,
but every zip member carries a CRC-32 that is checked as numpy reads it, so a truncated or bit-flipped
``data.npz`` is still found. :func:`read_v1` reads it; :func:`largemeta.data.sources.datasets.fetch_dataset`
then writes its arrays as a format-2 entry (the old folder is left in place for 0.1 installs sharing the
cache).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from largemeta.data.store.arrays import ArrayDataset
from largemeta.data.store.cache import atomic_open, atomic_write_json
from largemeta.errors import UserError
from largemeta.files import sha256_file

FORMAT = 2
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
META = "meta.json"
STAMP = "verified.json"
V1_FORMAT = 1


class Damaged(Exception):
    """A cache entry that is there but cannot be trusted: ``path`` is the file at fault, ``reason`` why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def entry_dir(cache: Path, name: str) -> Path:
    """The format-2 folder of dataset ``name``."""
    return cache / "datasets-v2" / name


def v1_dir(cache: Path, name: str) -> Path:
    """Version 0.1's folder of dataset ``name``."""
    return cache / "datasets" / name


def has_entry(folder: Path) -> bool:
    """Whether a format-2 entry was completed in ``folder`` (its ``meta.json`` exists; maybe damaged)."""
    return (folder / META).is_file()


def has_v1(folder: Path) -> bool:
    """Whether version 0.1 completed an entry in ``folder`` (what 0.1 itself took as cached)."""
    return (folder / "meta.json").is_file() and (folder / "data.npz").is_file()


# ------------------------------------------------------------------------------------------------ writing


class _HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through (numpy writes ``.npy`` data to
    objects that are not real files in chunks, through ``write``)."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.bytes += view.nbytes
        return self.f.write(data)


def _signature(path: Path, sha256: str) -> list[Any]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sha256]


def write_entry(folder: Path, ds: ArrayDataset) -> None:
    """Write ``ds`` as a format-2 entry: each array atomically, then ``meta.json``, then the stamp.

    ``OSError`` when the folder cannot be written (the caller turns it into one line).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META).unlink(missing_ok=True)  # a stale marker must not vouch for new arrays
    arrays: dict[str, dict[str, Any]] = {}
    for key in ARRAYS:
        array = np.ascontiguousarray(getattr(ds, key))
        with atomic_open(folder / f"{key}.npy") as f:
            out = _HashingWriter(f)
            np.lib.format.write_array(out, array, allow_pickle=False)
        arrays[key] = {
            "file": f"{key}.npy",
            "bytes": out.bytes,
            "sha256": out.sha.hexdigest(),
            "shape": list(array.shape),
            "dtype": array.dtype.str,
        }
    meta = {
        "format": FORMAT,
        "name": ds.name,
        "arrays": arrays,
        "class_names": list(ds.class_names),
        "notes": ds.notes,
        "extra": ds.extra,
        "train": len(ds.y_train),
        "test": len(ds.y_test),
        "shape": list(ds.shape),
    }
    atomic_write_json(folder / META, meta)
    _write_stamp(folder, {a["file"]: _signature(folder / a["file"], a["sha256"]) for a in arrays.values()})


def _write_stamp(folder: Path, stamp: dict[str, Any]) -> None:
    try:
        atomic_write_json(folder / STAMP, stamp)
    except OSError:
        pass  # a read-only cache: the next process verifies by hashing again


# ------------------------------------------------------------------------------------------------ reading


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise Damaged(path, "missing") from None
    except OSError as err:
        raise Damaged(path, f"unreadable ({err.strerror or type(err).__name__})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Damaged(path, f"not valid JSON ({type(err).__name__})") from None


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META
    meta = _read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise Damaged(path, f"not a format-{FORMAT} entry (format {found!r})")
    arrays = meta.get("arrays")
    keys = ("file", "bytes", "sha256", "shape", "dtype")
    if (
        not isinstance(arrays, dict)
        or any(not isinstance(arrays.get(k), dict) or any(f not in arrays[k] for f in keys) for k in ARRAYS)
        or not isinstance(meta.get("class_names"), list)
    ):
        raise Damaged(path, "lacks the array list or the class names")
    for key in ARRAYS:  # file names come from the entry itself: keep them inside it
        if Path(arrays[key]["file"]).name != arrays[key]["file"]:
            raise Damaged(path, f"names a file outside the entry ({arrays[key]['file']!r})")
    return meta


def _read_stamp(folder: Path) -> dict[str, Any]:
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def verify_array(path: Path, info: dict[str, Any], stamp: dict[str, Any]) -> list[Any] | None:
    """Check one array file against its ``meta.json`` record: ``Damaged`` if missing, of another size or of
    another sha256. Returns its new stamp signature when it had to be hashed, None when the stamp vouched."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise Damaged(path, "missing") from None
    except OSError as err:
        raise Damaged(path, f"unreadable ({err.strerror})") from None
    if size != info["bytes"]:
        raise Damaged(path, f"{size} bytes where {info['bytes']} were written (truncated or altered)")
    signature = _signature(path, info["sha256"])
    if stamp.get(path.name) == signature:
        return None
    try:
        actual = sha256_file(path)
    except OSError as err:
        raise Damaged(path, f"unreadable ({err.strerror})") from None
    if actual != info["sha256"]:
        raise Damaged(path, "sha256 differs from the one recorded at conversion (altered or damaged)")
    return signature


def read_entry(folder: Path, name: str) -> ArrayDataset:
    """The verified format-2 entry in ``folder`` with memory-mapped arrays; :class:`Damaged` names the file at
    fault when anything does not match what was written."""
    meta = _read_meta(folder)
    stamp = _read_stamp(folder)
    fresh: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for key in ARRAYS:
        info = meta["arrays"][key]
        path = folder / info["file"]
        signature = verify_array(path, info, stamp)
        if signature is not None:
            fresh[path.name] = signature
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise Damaged(path, f"not a readable .npy file ({err})") from None
        if list(array.shape) != info["shape"] or array.dtype.str != info["dtype"]:
            raise Damaged(
                path, f"holds {array.dtype.str} {array.shape}, {info['dtype']} {info['shape']} expected"
            )
        arrays[key] = array
    if fresh:
        _write_stamp(folder, {**{k: v for k, v in stamp.items() if k in _files(meta)}, **fresh})
    return _dataset(name, arrays, meta, folder / META)


def _files(meta: dict[str, Any]) -> set[str]:
    return {meta["arrays"][k]["file"] for k in ARRAYS}


def _dataset(name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any], where: Path) -> ArrayDataset:
    ds = ArrayDataset(
        name,
        class_names=tuple(str(c) for c in meta["class_names"]),
        notes=str(meta.get("notes", "")),
        extra=dict(meta.get("extra") or {}),
        **arrays,
    )
    try:
        return ds.validate(str(where.parent))
    except UserError as err:
        raise Damaged(where, str(err)) from None


def read_v1(folder: Path, name: str) -> ArrayDataset:
    """Version 0.1's entry in ``folder``, read into memory; :class:`Damaged` when its ``meta.json`` is not
    what 0.1 wrote or its ``data.npz`` fails to read (a zip CRC-32 or structure error: truncated, altered)."""
    meta = _read_json(folder / "meta.json")
    if not isinstance(meta, dict) or meta.get("format") != V1_FORMAT or "class_names" not in meta:
        raise Damaged(folder / "meta.json", "not the meta.json of a version 0.1 entry")
    npz = folder / "data.npz"
    try:  # the file handle is ours: numpy leaks its own when the zip structure is broken
        with open(npz, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            missing = [k for k in ARRAYS if k not in z.files]
            if missing:
                raise Damaged(npz, f"lacks {', '.join(missing)}")
            arrays = {k: z[k] for k in ARRAYS}
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as err:
        first = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise Damaged(npz, f"unreadable ({first})") from None
    return _dataset(name, arrays, meta, folder / "meta.json")
