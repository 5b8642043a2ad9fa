"""``quickdraw_full``: Google's per-category numpy bitmaps, each file pinned, end to end on loopback.

The loopback server of ``test_data_hub`` serves real ``.npy`` files written by numpy under a base URL of its
own (its paths happen to look like the hub's; the source only appends ``<category>.npy``, URL-quoted), so
download -> verify -> decode -> cache runs through ``largemeta.cli.main`` as a user would run it.
"""

from __future__ import annotations

import hashlib
import io
import json
import urllib.parse

import numpy as np
import pytest
from test_data_hub import REV, hub  # noqa: F401  (hub: the loopback server fixture)

from cli_runs import cli
from largemeta.data.sources import datasets
from largemeta.data.sources.fetch import DatasetSpec
from largemeta.data.sources.quickdraw_full import (
    PINS,
    QUICKDRAW_FULL,
    BitmapFile,
    BitmapFolder,
    NumpyBitmaps,
    build,
)

NAME = "qdtoy"
CATEGORIES = ("The Eiffel Tower", "apple", "banana")  # the bucket's byte-wise order: capitals first
PER_CLASS = 5


def npy(rows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, rows)
    return buf.getvalue()


def drawings(c: int, n: int = 7) -> np.ndarray:
    return np.random.default_rng(c).integers(0, 256, (n, 784), dtype=np.uint8)


@pytest.fixture
def toy(hub, monkeypatch):  # noqa: F811 (hub: the fixture)
    """Serve three categories under a loopback base URL and register ``qdtoy`` reading them."""
    base = f"{hub.url}/datasets/google/quickdraw/resolve/{REV}/"
    data = {c: npy(drawings(i)) for i, c in enumerate(CATEGORIES)}
    for c, b in data.items():
        hub.files[("google/quickdraw", REV, urllib.parse.quote(f"{c}.npy"))] = b

    def register(pins=None):
        pins = pins or tuple(BitmapFile(c, len(b), hashlib.sha256(b).hexdigest()) for c, b in data.items())
        sources = (NumpyBitmaps(base, tuple(pins)), BitmapFolder(CATEGORIES))
        spec = DatasetSpec(
            NAME,
            "toy bitmaps",
            3,
            (28, 28, 1),
            15,
            sources,
            lambda downloads, root: build(NAME, sources, downloads, root, per_class=PER_CLASS),
        )
        monkeypatch.setitem(datasets.DATASETS._entries, NAME, spec)
        return sources[0]

    register.data = data
    register.base = base
    return register


def test_fetch_decode_cache_and_list(capsys, tmp_path, hub, toy):  # noqa: F811
    toy()
    code, out, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 0, err
    assert f"{NAME}: 12 train + 3 test, 3 classes, 28x28x1" in out
    ds = datasets.fetch_dataset(NAME, tmp_path)
    assert ds.class_names == ("apple", "banana", "The Eiffel Tower")  # as quickdraw (npm) orders them
    assert np.bincount(ds.y_train).tolist() == [4, 4, 4] and np.bincount(ds.y_test).tolist() == [1, 1, 1]
    # every stored image is one of the first PER_CLASS drawings of its category, pixel for pixel
    kept = {
        i: drawings(CATEGORIES.index(n))[:PER_CLASS].reshape(-1, 28, 28) for i, n in enumerate(ds.class_names)
    }
    for x, y in zip(ds.x_train, ds.y_train, strict=True):
        assert any(np.array_equal(x[..., 0], k) for k in kept[int(y)])
    assert len(hub.log) == 3 and all(p.startswith("/datasets/google/quickdraw/") for p, _ in hub.log)
    code, out, _ = cli(capsys, "data", "list", "--json", "--data-dir", str(tmp_path))
    row = {r["name"]: r for r in json.loads(out)["datasets"]}[NAME]
    assert row["sources"] == [f"url:{toy.base}", "root"] and row["cached"] is True


def test_wrong_sha256_is_refused_and_removed(capsys, tmp_path, hub, toy):  # noqa: F811
    pins = [BitmapFile(c, len(b), hashlib.sha256(b).hexdigest()) for c, b in toy.data.items()]
    pins[1] = BitmapFile(pins[1].category, pins[1].size, "0" * 64)
    toy(pins)
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "sha256 mismatch" in err and "apple.npy" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "datasets-v2" / NAME).exists()
    assert not list((tmp_path / "downloads").rglob("apple.npy*"))


def test_server_stopping_mid_file_resumes_with_a_range(capsys, tmp_path, hub, toy):  # noqa: F811
    toy()
    quoted = urllib.parse.quote("The Eiffel Tower.npy")
    hub.cut[quoted] = 300
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    size = len(toy.data["The Eiffel Tower"])
    assert code == 2 and f"300 of {size} bytes arrived; run the command again to resume" in err
    assert not (tmp_path / "datasets-v2" / NAME).exists()
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 0, err
    assert (f"/datasets/google/quickdraw/resolve/{REV}/{quoted}", "bytes=300-") in hub.log


def test_root_in_googles_layout(capsys, tmp_path, hub, toy):  # noqa: F811
    toy()
    folder = tmp_path / "copy" / "numpy_bitmap"
    folder.mkdir(parents=True)
    for c, b in list(toy.data.items())[:2]:
        (folder / f"{c}.npy").write_bytes(b)
    code, _, err = cli(
        capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path), "--root", str(tmp_path / "copy")
    )
    assert (
        code == 2
        and "lacks 1 of the 3 files, e.g. 'banana.npy'" in err
        and len(err.strip().splitlines()) == 1
    )
    (folder / "banana.npy").write_bytes(toy.data["banana"])
    code, out, err = cli(
        capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path), "--root", str(tmp_path / "copy")
    )
    assert code == 0, err
    assert hub.log == [] and f"{NAME}: 12 train + 3 test, 3 classes" in out


def test_offline_makes_no_request(capsys, tmp_path, hub, toy, monkeypatch):  # noqa: F811
    toy()
    monkeypatch.setenv("LARGEMETA_OFFLINE", "1")
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and hub.log == [] and len(err.strip().splitlines()) == 1
    assert "--root" in err


def test_a_file_that_is_not_a_bitmap_array(capsys, tmp_path, hub, toy):  # noqa: F811
    odd = npy(np.zeros((4, 28, 28), np.float32))
    hub.files[("google/quickdraw", REV, "apple.npy")] = odd
    pins = [BitmapFile(c, len(b), hashlib.sha256(b).hexdigest()) for c, b in toy.data.items()]
    pins[1] = BitmapFile("apple", len(odd), hashlib.sha256(odd).hexdigest())
    toy(pins)
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "float32 (4, 28, 28); expected uint8 (N, 784)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "datasets-v2" / NAME).exists()


def test_the_registered_pins(capsys, tmp_path):
    """345 categories, each a whole number of 784-byte drawings after the 80-byte header Google's files have
    (a check on every transcribed size), distinct sha256s; listed with its source strings."""
    assert (
        len(PINS) == 345 and len({f.category for f in PINS}) == 345 and len({f.sha256 for f in PINS}) == 345
    )
    assert all((f.size - 80) % 784 == 0 for f in PINS)
    assert sum((f.size - 80) // 784 for f in PINS) == 50_426_266
    assert [f.name for f in PINS] == sorted(f.name for f in PINS)
    code, out, _ = cli(capsys, "data", "list", "--json", "--data-dir", str(tmp_path))
    row = {r["name"]: r for r in json.loads(out)["datasets"]}["quickdraw_full"]
    assert row["sources"] == [
        "url:https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/",
        "root",
    ]
    assert row["download_mb"] == pytest.approx(QUICKDRAW_FULL.download_mb) and row["download_mb"] > 39_000
