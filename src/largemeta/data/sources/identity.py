"""What identifies the contents of a dataset, for a run to record and a resume to compare, without hashing
gigabytes on every start.

* A registered dataset: the sha256 of each of its cache entry's arrays, as ``meta.json`` records them (the
  cache's verification stamps, :mod:`largemeta.data.store`, vouch that the arrays are those bytes: loading
  checks them). A version 0.1 entry recorded no checksums: its ``meta.json``'s sha256 and ``data.npz``'s size.
* A bring-your-own folder: its listing (every file's path below the folder, size and modification time),
  as one sha256 with the count and total size.
* A bring-your-own ``.npz``: its sha256, hashed again only when its size, modification time, ctime or inode
  differ from what the previous record saw (the cache's stamp rule).

:func:`describe_change` says in a few words how two records differ.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from largemeta.data.sources.datasets import DATASETS, looks_like_path
from largemeta.data.store.cache import data_dir as resolve_data_dir
from largemeta.data.store.cached import META, entry_dir, has_entry, has_v1, v1_dir
from largemeta.files import sha256_file


def dataset_identity(
    name: str, data_dir: str | os.PathLike[str] | None = None, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The identity of dataset ``name`` (a registered name or a path, as a suite writes it) as it is now;
    ``previous``: an earlier record of the same dataset (its stamp spares hashing an unchanged ``.npz``)."""
    if name not in DATASETS and looks_like_path(name):
        path = Path(name).expanduser().absolute()
        if path.is_dir():
            return _folder_identity(path)
        if path.is_file():
            return _file_identity(path, previous)
        return {"path": str(path), "missing": True}
    cache = resolve_data_dir(data_dir)
    folder = entry_dir(cache, name)
    try:
        if has_entry(folder):
            meta = _json(folder / META)
            arrays = meta.get("arrays") if isinstance(meta, dict) else None
            if isinstance(arrays, dict):
                return {
                    "dataset": name,
                    "arrays": {k: v.get("sha256") for k, v in sorted(arrays.items()) if isinstance(v, dict)},
                }
        old = v1_dir(cache, name)
        if has_v1(old):
            return {
                "dataset": name,
                "format": 1,
                "meta_sha256": sha256_file(old / "meta.json"),
                "bytes": (old / "data.npz").stat().st_size,
            }
    except OSError:
        pass
    return {"dataset": name, "cached": False}


def _json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _folder_identity(root: Path) -> dict[str, Any]:
    """A folder's listing: every file below it (hidden ones included: a file is a file), sorted."""
    h = hashlib.sha256()
    count = total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            try:
                st = full.stat()
            except OSError:  # a dangling link: listed as such
                h.update(f"{full.relative_to(root).as_posix()}|missing\n".encode())
                continue
            h.update(f"{full.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            count += 1
            total += st.st_size
    return {"folder": str(root), "files": count, "bytes": total, "listing_sha256": h.hexdigest()}


def _signature(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _file_identity(path: Path, previous: dict[str, Any] | None) -> dict[str, Any]:
    signature = _signature(path)
    if previous and previous.get("file") == str(path) and previous.get("stamp") == signature:
        digest = previous.get("sha256")
    else:
        digest = sha256_file(path)
    return {"file": str(path), "bytes": signature[0], "sha256": digest, "stamp": signature}


def same_dataset(recorded: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether two records name the same contents (a stamp is not the contents: an ``.npz`` touched but not
    changed, or a folder moved with its files' times kept, is the same data)."""
    keep = ("stamp", "folder", "file")
    return {k: v for k, v in recorded.items() if k not in keep} == {
        k: v for k, v in current.items() if k not in keep
    }


def describe_change(name: str, recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """How dataset ``name``'s contents differ, in a few words."""
    if current.get("missing"):
        return f"dataset {name!r}: {current['path']} is gone"
    if "listing_sha256" in recorded and "listing_sha256" in current:
        return (
            f"folder {name!r} changed ({recorded.get('files')} files, {recorded.get('bytes')} bytes then; "
            f"{current.get('files')} files, {current.get('bytes')} bytes now)"
        )
    if "sha256" in recorded and "sha256" in current:
        return (
            f"file {name!r} changed (sha256 {str(recorded['sha256'])[:12]} then, "
            f"{str(current['sha256'])[:12]} now)"
        )
    if "arrays" in recorded and "arrays" in current:
        keys = sorted(
            k
            for k in {*recorded["arrays"], *current["arrays"]}
            if recorded["arrays"].get(k) != current["arrays"].get(k)
        )
        return f"dataset {name!r}'s cached arrays changed ({', '.join(keys)})"
    return f"dataset {name!r} is not the data it was"
