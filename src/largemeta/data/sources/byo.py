"""Bring your own data: a folder of class subfolders, or an ``.npz`` of arrays.

Anywhere a dataset name is accepted, a path works too (:func:`largemeta.data.load_dataset`).

Folder
    ``ROOT/<class>/**/<image>`` (class = subfolder name, sorted; images found recursively by suffix, any
    size or mode Pillow reads). If ``ROOT/train`` and ``ROOT/test`` both exist they are used as the splits;
    otherwise 20 % of each class is held out for testing (stratified, seed 0). Images all grey -> 1 channel,
    otherwise RGB. Images of mixed sizes are resized (shorter side, then a centre crop) to a square whose side
    is the median shorter side, capped at 128 px; tasks resize again to their own size.
    An unreadable image is an error naming the file, unless ``skip_bad_images`` (then skipped and counted,
    with a warning).

``.npz``
    ``x`` uint8 (N, H, W) or (N, H, W, C), ``y`` integer (N,); optional ``x_test``/``y_test`` (else the same
    stratified 20 % split) and ``class_names`` (else ``"0"``, ``"1"``, ...).
"""

from __future__ import annotations

import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from largemeta import console
from largemeta.data.store.arrays import ArrayDataset, split_off_test
from largemeta.data.store.index import IMAGE_SUFFIXES, TEST_FRACTION, class_dirs, list_images
from largemeta.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "MAX_FOLDER_SIDE", "TEST_FRACTION", "load_folder", "load_npz", "load_path"]

MAX_FOLDER_SIDE = 128


def load_path(path: Path, skip_bad_images: bool = False) -> ArrayDataset:
    """Read a bring-your-own dataset from a folder or an ``.npz``."""
    if path.is_dir():
        return load_folder(path, skip_bad_images=skip_bad_images)
    if path.is_file() and path.suffix == ".npz":
        return load_npz(path)
    if not path.exists():
        raise UserError(
            f"no dataset called {str(path)!r} and no such file or folder "
            f"(see 'largemeta data list' for the registered names)"
        )
    raise UserError(f"{path} is neither a folder of class subfolders nor an .npz file")


# ----------------------------------------------------------------------------------------- folders


_GREY_MODES = ("1", "L", "I", "I;16", "F")


@contextmanager
def _bombs_are_errors() -> Iterator[None]:
    """Pillow warns about an image of more than MAX_IMAGE_PIXELS and raises above twice that: both make it a
    bad image here (a decompression bomb is never decoded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _probe(path: Path) -> tuple[tuple[int, int], bool]:
    """(width, height) and whether the image is grey, from the header only (no pixel decoding)."""
    with _bombs_are_errors(), Image.open(path) as im:
        if im.mode == "P":
            pal = im.getpalette() or []
            grey = all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))
        else:
            grey = im.mode in _GREY_MODES
        return im.size, grey


def square_resize(im: Image.Image, side: int) -> Image.Image:
    """Shorter side resized to ``side`` (bilinear), then the centred ``side`` x ``side`` crop."""
    if im.size == (side, side):
        return im
    w, h = im.size
    scale = side / min(w, h)
    im = im.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BILINEAR)
    left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
    return im.crop((left, top, left + side, top + side))


def _decode(path: Path, side: int | None, rgb: bool) -> np.ndarray:
    with _bombs_are_errors(), Image.open(path) as im:
        im = im.convert("RGB" if rgb else "L")
    if side is not None:
        im = square_resize(im, side)
    a = np.asarray(im, dtype=np.uint8)
    return a if a.ndim == 3 else a[..., None]


def _list_images(root: Path, dirs: list[Path]) -> list[tuple[Path, int]]:
    return [(root / p, c) for p, c in list_images(dirs, root)]


def _bad_image(path: Path, err: Exception, skip: bool, bad: list[Path]) -> None:
    if not skip:
        raise UserError(
            f"cannot read image {path}: {err} (fix or remove the file; 'largemeta data info FOLDER "
            "--skip-bad-images' reads the folder skipping such files, and counts them)"
        ) from None
    bad.append(path)


# SyntaxError: PIL's broken headers; DecompressionBomb*: an image too large to decode safely
_READ_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def load_folder(
    root: Path, skip_bad_images: bool = False, side: int | None = None, rgb: bool | None = None
) -> ArrayDataset:
    """Read ``root/<class>/**/<image>`` (or ``root/{train,test}/<class>/...``) as an ArrayDataset.

    ``side`` forces square images of that size and ``rgb`` the channel count; by default both follow the
    images (see the module docstring). Headers are read first, then each image is decoded straight into
    its final size, so a folder of large photos never sits in memory at full resolution.
    """
    split_dirs = [root / "train", root / "test"]
    if all(d.is_dir() for d in split_dirs):
        train_classes, test_classes = class_dirs(split_dirs[0]), class_dirs(split_dirs[1])
        names = [d.name for d in train_classes]
        unknown = sorted({d.name for d in test_classes} - set(names))
        if unknown:
            raise UserError(f"{root}/test has classes not in {root}/train: {', '.join(unknown)}")
        index = {n: i for i, n in enumerate(names)}
        splits = {
            "train": _list_images(root, train_classes),
            "test": [(p, index[test_classes[c].name]) for p, c in _list_images(root, test_classes)],
        }
    else:
        dirs = class_dirs(root)
        names = [d.name for d in dirs]
        splits = {"train": _list_images(root, dirs), "test": []}

    bad: list[Path] = []
    probes: dict[Path, tuple[tuple[int, int], bool]] = {}
    for path, _ in console.bar([f for files in splits.values() for f in files], desc=f"scan {root.name}"):
        try:
            probes[path] = _probe(path)
        except _READ_ERRORS as err:
            _bad_image(path, err, skip_bad_images, bad)
    if not probes:
        raise UserError(f"{root} has no readable images")
    if rgb is None:
        rgb = not all(grey for _, grey in probes.values())
    sizes = Counter(size for size, _ in probes.values())
    if side is None and len(sizes) > 1:
        side = min(MAX_FOLDER_SIDE, int(np.median([min(size) for size, _ in probes.values()])))

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, files in splits.items():
        xs, ys = [], []
        for path, label in console.bar(files, desc=f"read {root.name} {split}", unit="img"):
            if path not in probes:
                continue
            try:
                xs.append(_decode(path, side, rgb))
            except _READ_ERRORS as err:
                _bad_image(path, err, skip_bad_images, bad)
                continue
            ys.append(label)
        h, w = (side, side) if side is not None else next(iter(sizes))[::-1]
        empty = np.zeros((0, h, w, 3 if rgb else 1), np.uint8)
        arrays[split] = (np.stack(xs) if xs else empty, np.asarray(ys, np.int64))
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) in {root}, e.g. {bad[0]}", stacklevel=2)
    extra = {"source": str(root), "skipped_images": len(bad)}
    (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
    if splits["test"]:
        notes = f"folder {root} with its train/test split"
        ds = ArrayDataset(root.name, x_tr, y_tr, x_te, y_te, tuple(names), notes=notes, extra=extra)
    else:
        what = f" (folder {root})"
        ds = split_off_test(root.name, x_tr, y_tr, names, test_fraction=TEST_FRACTION, seed=0, what=what)
        ds.extra.update(extra)
    return ds.validate(str(root))


# --------------------------------------------------------------------------------------------- npz


def _check_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise UserError(f"{path}: '{key}' contains NaN; images must be uint8 0..255")
    if x.dtype != np.uint8:
        raise UserError(f"{path}: '{key}' must be uint8 0..255, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(
            f"{path}: '{key}' must have shape (N, H, W) or (N, H, W, C) with C 1 or 3, got {x.shape}"
        )
    if min(x.shape[1:3]) < 1:
        raise UserError(
            f"{path}: '{key}' holds images of {x.shape[1]}x{x.shape[2]} px; they need at least 1x1"
        )
    return x


def _check_labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.dtype.kind == "f":
        if np.isnan(y).any():
            raise UserError(f"{path}: '{key}' contains NaN; labels must be integers")
        if not np.array_equal(y, np.round(y)):
            raise UserError(f"{path}: '{key}' has non-integer labels")
    elif y.dtype.kind not in "iu":
        raise UserError(f"{path}: '{key}' must be integer labels, got {y.dtype}")
    if y.shape != (n,):
        raise UserError(f"{path}: '{key}' must have shape ({n},) to match the images, got {y.shape}")
    return y.astype(np.int64)


def load_npz(path: Path) -> ArrayDataset:
    """Read and validate a bring-your-own ``.npz`` (see the module docstring for the keys)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise UserError(f"cannot read {path} as .npz: {err}") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise UserError(
            f"{path}: missing key(s) {', '.join(missing)} (found: {', '.join(sorted(arrays)) or 'none'};"
            f" need x uint8 (N,H,W[,C]) and y int (N,))"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise UserError(f"{path}: give both x_test and y_test, or neither")
    x = _check_images(path, "x", arrays["x"])
    y = _check_labels(path, "y", arrays["y"], len(x))
    if len(x) == 0:
        raise UserError(f"{path}: 'x' holds no images")
    has_test = "x_test" in arrays
    if has_test:
        x_te = _check_images(path, "x_test", arrays["x_test"])
        y_te = _check_labels(path, "y_test", arrays["y_test"], len(x_te))
    labels = np.concatenate([y, y_te]) if has_test else y
    if "class_names" in arrays:
        names = [str(n) for n in np.asarray(arrays["class_names"]).ravel()]
    else:
        names = [str(i) for i in range(int(labels.max(initial=-1)) + 1)]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise UserError(
            f"{path}: labels range over [{labels.min()}, {labels.max()}], valid [0, {len(names) - 1}]"
            f" for {len(names)} classes"
        )
    name = path.stem
    if has_test:
        ds = ArrayDataset(name, x, y, x_te, y_te, tuple(names), notes=f"{path} with its own test split")
    else:
        ds = split_off_test(name, x, y, names, test_fraction=TEST_FRACTION, seed=0, what=f" ({path})")
    ds.extra["source"] = str(path)
    return ds.validate(str(path))
