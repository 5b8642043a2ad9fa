"""The registry of named datasets, the on-disk cache, and :func:`load_dataset`, the one way to get a dataset.

``load_dataset(name_or_path)``: a registered name is read from the cache, or fetched from its sources and
converted once; a path is read as a bring-your-own folder or ``.npz`` (:mod:`largemeta.data.byo`).

Every built-in dataset is registered below, in one place: those packaged in registries that need no dataset
host (:mod:`largemeta.data.packaged`: MNIST, Fashion-MNIST, QuickDraw, digits) and the paper's
(:mod:`largemeta.data.vision`: CIFAR-100, SVHN, ... through torchvision or a local ``--root``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from largemeta.data.arrays import ArrayDataset, DatasetSpec
from largemeta.data.byo import load_path
from largemeta.data.cache import atomic_open, atomic_write_json
from largemeta.data.cache import data_dir as resolve_data_dir
from largemeta.data.packaged import PACKAGED_DATASETS
from largemeta.data.vision import PAPER_DATASETS
from largemeta.errors import UserError
from largemeta.registry import Registry

FORMAT_VERSION = 1

BUILTIN_DATASETS: tuple[DatasetSpec, ...] = (*PACKAGED_DATASETS, *PAPER_DATASETS)

DATASETS: Registry[DatasetSpec] = Registry("dataset")
"""Every dataset a name can refer to (``largemeta data list``): the built-ins, each registered here."""
for _spec in BUILTIN_DATASETS:
    DATASETS.add(_spec.name, _spec)


# --------------------------------------------------------------------------------------------- cache


def dataset_dir(name: str, cache: Path) -> Path:
    return cache / "datasets" / name


def is_cached(name: str, cache: Path) -> bool:
    d = dataset_dir(name, cache)
    return (d / "meta.json").is_file() and (d / "data.npz").is_file()


def save_cached(ds: ArrayDataset, cache: Path) -> None:
    """Write ``data.npz`` then ``meta.json`` (the completion marker), each atomically."""
    d = dataset_dir(ds.name, cache)
    meta_path = d / "meta.json"
    meta_path.unlink(missing_ok=True)  # a stale marker must not vouch for a new npz
    with atomic_open(d / "data.npz") as f:
        # Uncompressed: loading 50 MB of uint8 is faster than inflating it, and the cache is small.
        np.savez(f, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    meta = {
        "format": FORMAT_VERSION,
        "name": ds.name,
        "class_names": list(ds.class_names),
        "notes": ds.notes,
        "extra": ds.extra,
        "train": len(ds.y_train),
        "test": len(ds.y_test),
        "shape": list(ds.shape),
    }
    atomic_write_json(meta_path, meta)


def load_cached(name: str, cache: Path) -> ArrayDataset:
    d = dataset_dir(name, cache)
    meta = json.loads((d / "meta.json").read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise UserError(
            f"cached {name} in {d} has format {meta.get('format')}, expected {FORMAT_VERSION}; "
            f"delete that folder and fetch again"
        )
    with np.load(d / "data.npz") as z:
        arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    return ArrayDataset(
        name,
        class_names=tuple(meta["class_names"]),
        notes=meta.get("notes", ""),
        extra=meta.get("extra", {}),
        **arrays,
    )


def fetch_dataset(
    name: str,
    data_dir_override: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> ArrayDataset:
    """Materialize the registered dataset ``name`` in the cache (fetch + convert once) and return it."""
    spec = DATASETS.get(name)
    cache = resolve_data_dir(data_dir_override)
    if is_cached(name, cache) and not force:
        return load_cached(name, cache)
    ds = spec.build(cache / "downloads", Path(root).expanduser() if root else None).validate()
    save_cached(ds, cache)
    return ds


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
