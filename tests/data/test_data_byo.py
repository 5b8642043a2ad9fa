"""Bring-your-own folders and .npz files, made in the test, and their corrupt variants."""

from __future__ import annotations

import numpy as np
import pytest

from largemeta.data.sources.datasets import load_dataset
from largemeta.errors import UserError


def test_folder_of_mixed_images(image_folder):
    ds = load_dataset(str(image_folder))
    assert ds.class_names == ("circle", "square", "triangle")
    # Mixed sizes -> square at the median shorter side (16..20 wide, 20 high -> 18); any RGB -> 3 channels.
    assert ds.shape == (18, 18, 3) and ds.x_train.dtype == np.uint8
    assert len(ds.y_train) + len(ds.y_test) == 15 and np.bincount(ds.y_test).tolist() == [1, 1, 1]
    assert "seed 0" in ds.notes


def test_folder_with_train_test_split(tmp_path, make_image):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                make_image(tmp_path / split / cls / f"{i}.jpg", size=(8, 8), mode="L", value=i)
    ds = load_dataset(str(tmp_path))
    assert (len(ds.y_train), len(ds.y_test), ds.shape) == (6, 4, (8, 8, 1))


def test_unreadable_image_is_named(image_folder):
    bad = image_folder / "square" / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(UserError, match=r"cannot read image .*broken\.png.*--skip-bad-images"):
        load_dataset(str(image_folder))


def test_skip_bad_images_counts_them(image_folder):
    (image_folder / "square" / "broken.png").write_bytes(b"\x89PNG truncated")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        ds = load_dataset(str(image_folder), skip_bad_images=True)
    assert ds.extra["skipped_images"] == 1 and len(ds.y_train) + len(ds.y_test) == 15


def test_truncated_image_with_valid_header(image_folder, make_image):
    path = image_folder / "circle" / "cut.png"
    make_image(path, size=(64, 64))
    path.write_bytes(path.read_bytes()[:60])  # header parses, pixel data is cut off
    with pytest.raises(UserError, match=r"cannot read image .*cut\.png"):
        load_dataset(str(image_folder))
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = load_dataset(str(image_folder), skip_bad_images=True)
    assert len(ds.y_train) + len(ds.y_test) == 15


def test_empty_class_folder(image_folder):
    (image_folder / "empty").mkdir()
    with pytest.raises(UserError, match=r"class folder .*empty has no images"):
        load_dataset(str(image_folder))


def test_folder_without_class_folders(tmp_path, make_image):
    make_image(tmp_path / "lonely.png")
    with pytest.raises(UserError, match="no class subfolders"):
        load_dataset(str(tmp_path))


def test_npz_without_test_split(small_npz):
    ds = load_dataset(str(small_npz))
    assert ds.class_names == ("a", "b", "c", "d") and ds.shape == (9, 9, 1)
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2, 2] and len(ds.y_train) == 32


def test_npz_with_test_split(tmp_path):
    path = tmp_path / "own.npz"
    x = np.zeros((6, 5, 5, 3), np.uint8)
    np.savez(path, x=x, y=np.array([0, 1, 2, 0, 1, 2]), x_test=x[:2], y_test=np.array([2, 1]))
    ds = load_dataset(str(path))
    assert (len(ds.y_train), len(ds.y_test), ds.num_classes, ds.shape) == (6, 2, 3, (5, 5, 3))


def _npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


X = np.zeros((4, 3, 3), np.uint8)
Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": X}, r"missing key\(s\) y"),
        ({"images": X, "labels": Y}, r"missing key\(s\) x, y \(found: images, labels"),
        ({"x": X.astype(np.float32), "y": Y}, "'x' must be uint8"),
        ({"x": np.full((4, 3, 3), np.nan), "y": Y}, "'x' contains NaN"),
        ({"x": X, "y": np.array([0.0, np.nan, 1.0, 0.0])}, "'y' contains NaN"),
        ({"x": X, "y": np.array([0, 1, 2])}, r"'y' must have shape \(4,\)"),
        ({"x": X, "y": np.array([0, 1, -1, 0])}, r"labels range over \[-1, 1\]"),
        ({"x": X, "y": np.array([0, 1, 5, 0]), "class_names": np.array(["a", "b"])}, r"valid \[0, 1\] for 2"),
        ({"x": np.zeros((4, 3), np.uint8), "y": Y}, "must have shape"),
        ({"x": X, "y": Y, "x_test": X}, "both x_test and y_test"),
    ],
)
def test_bad_npz(tmp_path, arrays, message):
    with pytest.raises(UserError, match=message):
        load_dataset(_npz(tmp_path, **arrays))


def test_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read .*junk.npz as .npz"):
        load_dataset(str(path))


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        load_dataset(str(tmp_path / "nowhere"))
