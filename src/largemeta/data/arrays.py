"""What a dataset is in memory (:class:`ArrayDataset`) and what a registered one is (:class:`DatasetSpec`).

The lowest module of the dataset side of the data layer: bring-your-own readers (:mod:`largemeta.data.byo`),
the built-in dataset definitions (:mod:`largemeta.data.packaged`, :mod:`largemeta.data.vision`) and the
registry and cache (:mod:`largemeta.data.datasets`) all build on it, and it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from largemeta.data.formats import stratified_split
from largemeta.data.sources import Source
from largemeta.errors import UserError


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
            if min(x.shape[1:3]) < 1 or x.shape[3] not in (1, 3):
                raise UserError(
                    f"{what}: x_{split} images must be at least 1x1 px with 1 or 3 channels, got {x.shape}"
                )
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
        """Where it comes from, in the order tried: ``hf:OWNER/REPO@REVISION``, ``npm:NAME@VERSION``,
        ``torchvision:CLASS``, ``root`` (a local copy, ``--root``), ..."""
        return [s.key() for s in self.sources]

    @property
    def heals(self) -> bool:
        """Whether a damaged cache entry is rebuilt without asking: a registry package is one of its sources
        (the others — torchvision's hosts, a user's ``--root`` — may be gone or need the user)."""
        return any(s.from_registry for s in self.sources)
