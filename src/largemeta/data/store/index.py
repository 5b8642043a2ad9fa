"""Listing a bring-your-own image folder without opening a file: its classes, and each split's files and
labels.

A streamed task (:mod:`largemeta.data.tasks.stream`) decodes images as it samples them, so all it needs up
front is the list of files. :func:`index_folder` walks ``ROOT/<class>/**/<image>`` (or
``ROOT/train/<class>/...`` and ``ROOT/test/<class>/...``) with ``os.scandir``, whose directory entries carry
the file type, so nothing is opened, probed or decoded: a million files are listed in seconds. The files,
their order and the held-out split are those of :func:`largemeta.data.sources.byo.load_folder` (the device
path, which decodes everything): images found recursively by suffix, sorted by path; without
``train``/``test`` folders 20 % of each class is held out (stratified, seed 0).

The listing is kept in the dataset cache, ``<cache>/indexes/<sha256 of the folder's absolute path>/``
(``index.json``: classes, counts and the mtime of every directory walked; ``train.paths``/``test.paths``:
relative paths separated by NUL; ``train.labels.npy``/``test.labels.npy``), and reused while no directory of
the folder has changed — adding, removing or renaming a file changes its directory's mtime. Only directories
are stat'ed to check that. A cache that cannot be written just means the next run lists again.

Paths are held as one byte string and an offset array (about 50 bytes per file), not a million Python
strings, so a streamed run's memory stays small next to the images it no longer holds.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from largemeta.data.store.arrays import stratified_split
from largemeta.data.store.cache import atomic_open, atomic_write_json
from largemeta.errors import UserError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
TEST_FRACTION = 0.2
"""Share of each class held out for testing when a folder has no ``train``/``test`` split (seed 0)."""
INDEX_FORMAT = 1
SPLITS = ("train", "test")


def class_dirs(root: Path) -> list[Path]:
    """The class subfolders of ``root``, sorted by name (hidden ones skipped); ``UserError`` when none."""
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as err:
        raise UserError(f"cannot list {root}: {err.strerror}") from None
    if not dirs:
        raise UserError(f"{root} has no class subfolders (expected ROOT/<class>/<image files>)")
    return dirs


def _walk(folder: Path, parts: tuple[str, ...], out: list[tuple[str, ...]], dirs: dict[str, int]) -> None:
    """Image files under ``folder`` (recursively, not into symlinked folders, like ``Path.rglob``) as path
    parts relative to the class folder's parent; records each directory's mtime."""
    dirs["/".join(parts)] = folder.stat().st_mtime_ns
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                if not entry.is_symlink():
                    _walk(Path(entry.path), (*parts, entry.name), out, dirs)
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file():
                out.append((*parts, entry.name))


def list_images(dirs: list[Path], base: Path, mtimes: dict[str, int] | None = None) -> list[tuple[str, int]]:
    """``(path relative to base, label)`` of every image under each class folder (label = its position in
    ``dirs``), sorted by path within each class, as :func:`largemeta.data.sources.byo.load_folder` orders
    them; ``UserError`` for a class folder without images."""
    out: list[tuple[str, int]] = []
    mtimes = {} if mtimes is None else mtimes
    prefix = tuple(base.parts)
    for label, d in enumerate(dirs):
        found: list[tuple[str, ...]] = []
        try:
            _walk(d, tuple(d.parts[len(prefix) :]), found, mtimes)
        except OSError as err:
            raise UserError(f"cannot list {d}: {err.strerror}") from None
        if not found:
            raise UserError(f"class folder {d} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        found.sort()  # by path parts: the order of sorted(Path(...)) on POSIX
        out += [("/".join(p), label) for p in found]
    return out


@dataclass(frozen=True, eq=False)
class Listing:
    """One split's files: relative paths (one NUL-separated byte string and offsets) and int64 labels."""

    blob: bytes
    offsets: np.ndarray
    labels: np.ndarray

    @classmethod
    def of(cls, paths: list[str], labels: np.ndarray) -> Listing:
        encoded = [os.fsencode(p) for p in paths]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) + 1 for e in encoded], out=offsets[1:])
        return cls(b"\0".join(encoded) + (b"\0" if encoded else b""), offsets, np.asarray(labels, np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return os.fsdecode(self.blob[self.offsets[i] : self.offsets[i + 1] - 1])

    def paths(self, rows: np.ndarray) -> list[str]:
        return [self.path(int(i)) for i in rows]


@dataclass(frozen=True, eq=False)
class FolderIndex:
    """A bring-your-own folder, listed: class names and, per split, the files and their labels."""

    root: Path
    class_names: tuple[str, ...]
    splits: dict[str, Listing]
    notes: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> dict[str, int]:
        return {s: len(v) for s, v in self.splits.items()}


def _walk_folder(root: Path) -> tuple[list[str], dict[str, list[tuple[str, int]]], dict[str, int], str]:
    mtimes: dict[str, int] = {"": root.stat().st_mtime_ns}
    split_dirs = [root / "train", root / "test"]
    if all(d.is_dir() for d in split_dirs):
        mtimes.update({d.name: d.stat().st_mtime_ns for d in split_dirs})
        train_classes, test_classes = class_dirs(split_dirs[0]), class_dirs(split_dirs[1])
        names = [d.name for d in train_classes]
        unknown = sorted({d.name for d in test_classes} - set(names))
        if unknown:
            raise UserError(f"{root}/test has classes not in {root}/train: {', '.join(unknown)}")
        number = {n: i for i, n in enumerate(names)}
        listed = {
            "train": list_images(train_classes, root, mtimes),
            "test": [(p, number[test_classes[c].name]) for p, c in list_images(test_classes, root, mtimes)],
        }
        return names, listed, mtimes, f"folder {root} with its train/test split"
    dirs = class_dirs(root)
    listed = list_images(dirs, root, mtimes)
    labels = np.asarray([c for _, c in listed], np.int64)
    train, test = stratified_split(labels, test_fraction=TEST_FRACTION, seed=0)
    held = f"{TEST_FRACTION:.0%} of each class held out (stratified, seed 0)"
    notes = f"no official test split (folder {root}): {held}"
    return (
        [d.name for d in dirs],
        {"train": [listed[i] for i in train], "test": [listed[i] for i in test]},
        mtimes,
        notes,
    )


def _index_folder_of(cache: Path, root: Path) -> Path:
    return cache / "indexes" / hashlib.sha256(os.fsencode(root)).hexdigest()[:32]


def _load_cached(folder: Path, root: Path) -> FolderIndex | None:
    try:
        meta = json.loads((folder / "index.json").read_text())
        if meta.get("format") != INDEX_FORMAT or meta.get("root") != str(root):
            return None
        for rel, mtime in meta["mtimes"].items():
            if (root / rel).stat().st_mtime_ns != mtime:
                return None
        splits = {}
        for s in SPLITS:
            blob = (folder / f"{s}.paths").read_bytes()
            labels = np.load(folder / f"{s}.labels.npy", allow_pickle=False)
            offsets = np.zeros(len(labels) + 1, np.int64)
            ends = np.flatnonzero(np.frombuffer(blob, np.uint8) == 0) + 1
            if len(ends) != len(labels) or meta["counts"][s] != len(labels):
                return None
            offsets[1:] = ends
            splits[s] = Listing(blob, offsets, labels)
        return FolderIndex(root, tuple(meta["class_names"]), splits, str(meta["notes"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # absent, stale or damaged: list again


def _save(folder: Path, index: FolderIndex, mtimes: dict[str, int]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for s, listing in index.splits.items():
            with atomic_open(folder / f"{s}.paths") as f:
                f.write(listing.blob)
            with atomic_open(folder / f"{s}.labels.npy") as f:
                np.save(f, listing.labels)
        meta = {
            "format": INDEX_FORMAT,
            "root": str(index.root),
            "class_names": list(index.class_names),
            "counts": index.counts(),
            "mtimes": mtimes,
            "notes": index.notes,
        }
        atomic_write_json(folder / "index.json", meta)  # last: vouches for the files above
    except OSError:
        pass  # a read-only cache: list again next time


def index_folder(root: Path, cache: Path | None = None) -> FolderIndex:
    """The listing of the image folder ``root`` (see the module docstring), from ``cache`` when it is still
    current, else walked (and stored in ``cache`` when one is given)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"{root} is not a folder of class subfolders")
    stored = _index_folder_of(cache, root) if cache is not None else None
    if stored is not None:
        found = _load_cached(stored, root)
        if found is not None:
            return found
    names, listed, mtimes, notes = _walk_folder(root)
    splits = {
        s: Listing.of([p for p, _ in listed[s]], np.asarray([c for _, c in listed[s]], np.int64))
        for s in SPLITS
    }
    index = FolderIndex(root, tuple(names), splits, notes)
    if stored is not None:
        _save(stored, index, mtimes)
    return index
