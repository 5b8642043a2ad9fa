"""The paper's datasets, for users who are online (torchvision, a pinned Hugging Face Hub repository, the
authors' pinned archive) or hold a local copy (``--root``).

None of these ships inside a package registry, so offline and without ``--root`` they fail with one line
saying what was tried and how to get the data. Images are stored in the cache at ``store`` px (shorter side
resized, centre crop) so the variable-size sets fit one uint8 array; tasks resize again to their own size.

``--root DIR``:
  * torchvision datasets: ``DIR`` is torchvision's ``root`` for that class (read with ``download=False``);
  * folder datasets (Tiny ImageNet, Stanford Dogs, CUB-200, which torchvision lacks): ``DIR`` is, or contains
    ``layout``, a folder of class subfolders (read like a bring-your-own folder; 20 % of each class held out).

This module only describes them (:data:`PAPER_DATASETS`); :mod:`largemeta.data.sources.datasets` registers
them. torchvision is imported only when a dataset is built, so listing the registry never needs it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from largemeta import console
from largemeta.data.sources.archives import UrlArchive
from largemeta.data.sources.byo import load_folder, square_resize
from largemeta.data.sources.fetch import DatasetSpec, Source, SourceUnavailable, offline
from largemeta.data.sources.hub import HubFile, HubParquet, download_bytes
from largemeta.data.store.arrays import ArrayDataset
from largemeta.errors import UserError


@dataclass(frozen=True)
class TorchvisionSource(Source):
    """A ``torchvision.datasets`` class; ``splits`` gives the constructor keywords of train and test."""

    cls: str
    splits: tuple[dict[str, Any], dict[str, Any]]
    store: int
    downloads: bool = True
    """False where torchvision's download no longer works (Stanford Cars): only a local copy is read."""

    def describe(self) -> str:
        return f"torchvision.datasets.{self.cls}" + ("" if self.downloads else " (a local copy, --root)")

    def key(self) -> str:
        return f"torchvision:{self.cls}" + ("" if self.downloads else " (--root only)")

    def fetch(self, downloads: Path) -> dict[str, bytes]:  # pragma: no cover - interface only
        raise NotImplementedError("use load()")

    def load(self, name: str, root: Path, download: bool) -> ArrayDataset:
        try:
            tv = importlib.import_module("torchvision.datasets")
        except Exception as err:  # torchvision missing, or built against another torch
            raise SourceUnavailable(f"torchvision does not import: {str(err).splitlines()[0]}") from None
        arrays = []
        classes: list[str] | None = None
        for kwargs in self.splits:
            try:
                ds = getattr(tv, self.cls)(root=str(root), download=download, **kwargs)
            except Exception as err:  # torchvision raises RuntimeError/URLError/OSError for missing data
                raise SourceUnavailable(f"{self.cls}({root}): {str(err).splitlines()[0]}") from None
            classes = classes or [str(c) for c in getattr(ds, "classes", [])]
            xs, ys = [], []
            for img, label in console.bar(ds, desc=f"convert {name}", unit="img"):
                xs.append(_square(img, self.store))
                ys.append(int(label))
            arrays += [np.stack(xs), np.asarray(ys, np.int64)]
        n = int(max(arrays[1].max(), arrays[3].max())) + 1
        names = tuple(classes) if classes and len(classes) == n else tuple(str(i) for i in range(n))
        return ArrayDataset(
            name, *arrays, class_names=names, notes=f"via {self.describe()}, stored at {self.store} px"
        )


@dataclass(frozen=True)
class FolderSource(Source):
    """A local folder of class subfolders (``root`` itself or ``root/layout``)."""

    layout: str
    store: int

    def describe(self) -> str:
        return f"local folder --root DIR (DIR or DIR/{self.layout} holding class subfolders)"

    def key(self) -> str:
        return "root"

    def fetch(self, downloads: Path) -> dict[str, bytes]:  # pragma: no cover - interface only
        raise NotImplementedError("use load()")

    def load(self, name: str, root: Path) -> ArrayDataset:
        folder = root / self.layout if (root / self.layout).is_dir() else root
        if not folder.is_dir():
            raise SourceUnavailable(f"{folder} is not a folder")
        ds = load_folder(folder, side=self.store, rgb=True)
        return ArrayDataset(
            name, ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.class_names, notes=ds.notes
        )


def _square(img: Image.Image, side: int) -> np.ndarray:
    """RGB uint8 (side, side, 3): shorter side resized to ``side``, then a centre crop."""
    return np.asarray(square_resize(img.convert("RGB"), side), dtype=np.uint8)


@dataclass(frozen=True)
class _Vision:
    name: str
    description: str
    classes: int
    store: int
    images: int | None
    sources: tuple[Source, ...] = field(default_factory=tuple)

    def build(self, downloads: Path, root: Path | None) -> ArrayDataset:
        tried = []
        for src in self.sources:
            try:
                if isinstance(src, FolderSource):
                    if root is None:
                        raise SourceUnavailable("no --root given")
                    return src.load(self.name, root)
                if isinstance(src, HubParquet):
                    if root is not None:
                        raise SourceUnavailable("--root given: the local copy is used instead")
                    return src.load(self.name, downloads, self.store, 3, self.classes)
                if isinstance(src, UrlArchive):
                    if root is not None:
                        raise SourceUnavailable("--root given: the local copy is used instead")
                    return src.load(self.name, downloads, self.store)
                assert isinstance(src, TorchvisionSource)
                if root is not None:
                    return src.load(self.name, root, download=False)
                if not src.downloads:
                    raise SourceUnavailable("torchvision cannot download it any more: no --root given")
                if offline():
                    raise SourceUnavailable("offline")
                return src.load(self.name, downloads.parent / "torchvision", download=True)
            except SourceUnavailable as err:
                tried.append(f"{src.describe()} ({err})")
        if any(isinstance(s, UrlArchive) for s in self.sources):
            how = (
                f"when online run 'largemeta data fetch {self.name}', or pass --root pointing at a local "
                "copy (a folder of class subfolders)"
            )
        elif any(isinstance(s, HubParquet) for s in self.sources):
            how = (
                f"when online run 'pip install largemeta[hub]' and 'largemeta data fetch {self.name}', "
                f"or pass --root pointing at a local copy"
            )
        elif any(isinstance(s, TorchvisionSource) and s.downloads for s in self.sources):
            how = (
                f"when online run 'pip install largemeta[vision]' and 'largemeta data fetch {self.name}', "
                f"or pass --root pointing at a local copy (torchvision layout)"
            )
        else:
            how = "download it from its authors and pass --root pointing at the folder of class subfolders"
        raise UserError(
            f"cannot get {self.name}: tried {'; '.join(tried)}. It is not in any package registry: {how}"
        )


def _tv(cls: str, train: dict[str, Any], test: dict[str, Any], store: int) -> TorchvisionSource:
    return TorchvisionSource(cls, (train, test), store)


# Hugging Face Hub pins, read off the hub's pages (docs/data.md has the table and where each value was read).
# SVHN, cropped digits: a commit of the repository's refs/convert/parquet branch; its commit page lists both
# files' LFS pointers (sha256 and exact size). 73,257 train + 26,032 test, labels 0-9 (digit 0 is label 0).
SVHN_HUB = HubParquet(
    "ufldl-stanford/svhn",
    "46e4b678bdef920b19f9f3f67ffd3e24d9230709",
    (
        HubFile(
            "cropped_digits/train/0000.parquet",
            "train",
            135_589_380,
            "b3c0fad72fc9e5aaaac921832a66e3385150e0c76fbeb025196dc02c3e28fab4",
        ),
        HubFile(
            "cropped_digits/test/0000.parquet",
            "test",
            47_003_111,
            "43587cfe44ed0af3208285439f6db16322499b6e841102e7b9d1048cd2904c6d",
        ),
    ),
)

# STL-10, labelled part: both files' last commit, 5e47e36, whose tree page gives its full hash; the files'
# pages give their sha256 and rounded sizes (exact sizes unknown: the server's length decides, sha256 checks).
STL10_HUB = HubParquet(
    "tanganke/stl10",
    "5e47e3613d05e2527c82cf36288a5d1f79cba870",
    (
        HubFile(
            "data/train-00000-of-00001.parquet",
            "train",
            None,
            "b450f19e41454731be0bcddc7093fcf9793fe9b64ea795e6ef18ca77f34c353d",
            approx_bytes=89_000_000,
        ),
        HubFile(
            "data/test-00000-of-00001.parquet",
            "test",
            None,
            "298b23e983c755dfba2c69dec181340221deb1a5ad6651990c7c5c559fb892be",
            approx_bytes=142_000_000,
        ),
    ),
)

# Stanford Cars, the official split (8,144 train + 8,041 test, labels 0-195): tanganke/stanford_cars at its
# "Convert dataset to Parquet (#1)" commit (its main). The sha256s were read on the files' pages at two
# commits of that pull request whose later commits only delete a loading script and zips; sizes unknown.
CARS_HUB = HubParquet(
    "tanganke/stanford_cars",
    "9abf6cf7d6dfa7b95152a0d6e791ea9435b47a40",
    tuple(
        HubFile(f"data/{split}-0000{i}-of-00002.parquet", split, None, sha, approx_bytes=mb * 1_000_000)
        for split, i, sha, mb in (
            ("train", 0, "b35f21fdeda40973f3b3e1d17bd7a0d2baf8ef249777fc0a0ea7c33c63fa718e", 504),
            ("train", 1, "b8fc512aac709672c09f17a1b5ee7ae47585894ca52be753cd4e3af726fdef77", 485),
            ("test", 0, "ddb15e6a44573203cc1be170be2f05d1e34b22532d37579a6d53cfd05c21485a", 513),
            ("test", 1, "22c54046e4beaeb01d4a6daa72a39c5af50feda6850dbf2b0f784cabf865ccaa", 474),
        )
    ),
)

# The authors' archives of the two datasets torchvision lacks, each pinned by its exact size and sha256 as
# other projects record them (docs/data.md names them); read as the --root folder of class subfolders.
# Stanford Dogs: images.tar, 120 breeds, 20,580 images (tensorflow/datasets' url_checksums/stanford_dogs.txt).
STANFORD_DOGS_ARCHIVE = UrlArchive(
    "http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar",
    793_579_520,
    "a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58",
    "Images",
)
# CUB-200-2011: CUB_200_2011.tgz, 200 species, 11,788 images; the same size and sha256 are recorded for the
# Caltech data repository's copy, the old vision.caltech.edu one and a Google Drive one.
CUB200_ARCHIVE = UrlArchive(
    "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
    1_150_585_339,
    "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
    "CUB_200_2011/images",
)
# Tiny ImageNet: tiny-imagenet-200.zip, 200 classes x 500 train images (64 px). No sha256 of it is published
# anywhere we found; its md5 is (torchvision-style loaders in many projects), and its exact size is recorded
# in download logs: the pin is that size and md5 (docs/data.md).
TINY_IMAGENET_ARCHIVE = UrlArchive(
    "https://cs231n.stanford.edu/tiny-imagenet-200.zip",
    248_100_043,
    "90528d7ca1a48142e341f4ef8d21d0de",
    "tiny-imagenet-200/train",
    algorithm="md5",
)

_SPLIT = ({"train": True}, {"train": False})
_VISION = (
    _Vision("cifar100", "CIFAR-100", 100, 32, 60_000, (_tv("CIFAR100", *_SPLIT, 32),)),
    _Vision(
        "svhn",
        "Street View House Numbers",
        10,
        32,
        99_289,
        (SVHN_HUB, _tv("SVHN", {"split": "train"}, {"split": "test"}, 32)),
    ),
    _Vision(
        "stl10",
        "STL-10 (labelled part)",
        10,
        96,
        13_000,
        (STL10_HUB, _tv("STL10", {"split": "train"}, {"split": "test"}, 96)),
    ),
    _Vision(
        "flowers102",
        "VGG Flowers 102",
        102,
        84,
        8_189,
        (_tv("Flowers102", {"split": "train"}, {"split": "test"}, 84),),
    ),
    _Vision(
        "pets",
        "Oxford-IIIT Pets",
        37,
        84,
        7_349,
        (_tv("OxfordIIITPet", {"split": "trainval"}, {"split": "test"}, 84),),
    ),
    _Vision(
        "aircraft",
        "FGVC Aircraft (variants)",
        100,
        84,
        10_000,
        (_tv("FGVCAircraft", {"split": "trainval"}, {"split": "test"}, 84),),
    ),
    _Vision(
        "cars",
        "Stanford Cars",
        196,
        84,
        16_185,
        # torchvision's StanfordCars download is dead upstream (it raises on download=True): the hub, or a
        # local copy in torchvision's layout
        (
            CARS_HUB,
            TorchvisionSource("StanfordCars", ({"split": "train"}, {"split": "test"}), 84, downloads=False),
        ),
    ),
    _Vision(
        "food101", "Food-101", 101, 84, 101_000, (_tv("Food101", {"split": "train"}, {"split": "test"}, 84),)
    ),
    _Vision(
        "tiny_imagenet",
        "Tiny ImageNet (train folder)",
        200,
        64,
        100_000,
        (TINY_IMAGENET_ARCHIVE, FolderSource("tiny-imagenet-200/train", 64)),
    ),
    _Vision(
        "stanford_dogs", "Stanford Dogs", 120, 84, 20_580, (STANFORD_DOGS_ARCHIVE, FolderSource("Images", 84))
    ),
    _Vision(
        "cub200",
        "Caltech-UCSD Birds 200-2011",
        200,
        84,
        11_788,
        (CUB200_ARCHIVE, FolderSource("CUB_200_2011/images", 84)),
    ),
)


def _spec(v: _Vision) -> DatasetSpec:
    hub = download_bytes(v.sources)  # torchvision's downloads have no size here; a hub pin has
    hub = hub or next((s.download_bytes for s in v.sources if isinstance(s, UrlArchive)), None)
    return DatasetSpec(
        v.name,
        v.description,
        v.classes,
        (v.store, v.store, 3),
        v.images,
        v.sources,
        v.build,
        download_mb=hub / 1e6 if hub else None,
    )


PAPER_DATASETS: tuple[DatasetSpec, ...] = tuple(_spec(v) for v in _VISION)
