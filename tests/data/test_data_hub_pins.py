"""Hub pins beyond one repository of image + label: splits from two repositories at their own commits, and
columns named in the pin (CIFAR-100's ``img`` / ``fine_label`` / ``coarse_label``), each on the loopback hub
of ``test_data_hub`` with parquet files written by the real pyarrow."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from largemeta.data.sources import datasets
from largemeta.data.sources.hub import HubFile, HubParquet
from largemeta.data.sources.vision import FolderSource, _spec, _Vision

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from test_data_hub import CLASSES, NAME, REV, hub, pin, png  # noqa: E402, F401  (hub: fixture)

from cli_runs import cli  # noqa: E402

TRAIN_REPO, TEST_REPO = "someone/Toy_train", "someone/Toy_test"
TEST_REV = "fedcba9876543210fedcba9876543210fedcba98"
FINE = ["apple", "bee", "cloud", "dolphin"]
COARSE = ["fruit", "insect", "sky"]


def register(monkeypatch, source: HubParquet, classes: int) -> None:
    spec = _spec(_Vision(NAME, "toy", classes, 16, None, (source, FolderSource("toy", 16))))
    monkeypatch.setitem(datasets.DATASETS._entries, NAME, spec)


def hub_parquet(n_per_class: int, offset: int = 0) -> bytes:
    labels = [c for c in range(len(CLASSES)) for _ in range(n_per_class)]
    images = [{"bytes": png(80 * c + i + offset), "path": f"{i}.png"} for i, c in enumerate(labels)]
    table = pa.table({"image": images, "label": pa.array(labels, pa.int64())})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def cifar_parquet(fine: list[int], coarse: list[int]) -> bytes:
    """The schema of ``uoft-cs/cifar100``'s parquet files: ``img`` (struct<bytes, path>), ``fine_label``,
    ``coarse_label``, with both label names in the ``datasets`` metadata."""
    images = [{"bytes": png(40 * f + i), "path": f"{i}.png"} for i, f in enumerate(fine)]
    table = pa.table(
        {
            "img": images,
            "fine_label": pa.array(fine, pa.int64()),
            "coarse_label": pa.array(coarse, pa.int64()),
        }
    )
    features = {
        "img": {"_type": "Image"},
        "fine_label": {"_type": "ClassLabel", "names": FINE},
        "coarse_label": {"_type": "ClassLabel", "names": COARSE},
    }
    table = table.replace_schema_metadata({b"huggingface": json.dumps({"info": {"features": features}})})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_splits_from_two_repositories(capsys, tmp_path, hub, monkeypatch):  # noqa: F811 (hub: the fixture)
    train, test = hub_parquet(4), hub_parquet(2, offset=300)
    path = "data/part-00000.parquet"  # the same path in both repositories: kept apart by repository
    hub.files[(TRAIN_REPO, REV, path)] = train
    hub.files[(TEST_REPO, TEST_REV, path)] = test
    source = HubParquet(
        TRAIN_REPO,
        REV,
        (pin(path, "train", train), pin(path, "test", test, repo=TEST_REPO, revision=TEST_REV)),
    )
    register(monkeypatch, source, 3)
    code, out, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 0, err
    assert f"{NAME}: 12 train + 6 test, 3 classes" in out
    assert sorted(p for p, _ in hub.log) == sorted(
        [f"/datasets/{TRAIN_REPO}/resolve/{REV}/{path}", f"/datasets/{TEST_REPO}/resolve/{TEST_REV}/{path}"]
    )
    ds = datasets.fetch_dataset(NAME, tmp_path)
    assert np.bincount(ds.y_train).tolist() == [4, 4, 4] and np.bincount(ds.y_test).tolist() == [2, 2, 2]
    for f, data in zip(source.files, (train, test), strict=True):
        assert source.local(tmp_path / "downloads", f).read_bytes() == data
    code, out, _ = cli(capsys, "data", "list", "--json", "--data-dir", str(tmp_path))
    row = {r["name"]: r for r in json.loads(out)["datasets"]}[NAME]
    assert row["sources"] == [f"hf:{TRAIN_REPO}@{REV} + hf:{TEST_REPO}@{TEST_REV}", "root"]
    assert row["download_mb"] == pytest.approx((len(train) + len(test)) / 1e6)


def test_a_wrong_sha256_in_the_second_repository_names_it(capsys, tmp_path, hub, monkeypatch):  # noqa: F811 (hub: the fixture)
    train, test = hub_parquet(2), hub_parquet(1, offset=300)
    path = "data/part-00000.parquet"
    hub.files[(TRAIN_REPO, REV, path)] = train
    hub.files[(TEST_REPO, TEST_REV, path)] = test
    bad = HubFile(path, "test", len(test), "0" * 64, repo=TEST_REPO, revision=TEST_REV)
    register(monkeypatch, HubParquet(TRAIN_REPO, REV, (pin(path, "train", train), bad)), 3)
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "sha256 mismatch" in err and f"{TEST_REPO}@{TEST_REV}:{path}" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "datasets-v2" / NAME).exists()


def test_a_file_pin_needs_both_repository_and_commit():
    data = b"x" * 10
    with pytest.raises(ValueError, match="without its commit"):
        HubParquet(TRAIN_REPO, REV, (pin("a.parquet", "train", data, repo=TEST_REPO),))
    with pytest.raises(ValueError, match="40-hex"):
        HubParquet(TRAIN_REPO, REV, (pin("a.parquet", "train", data, repo=TEST_REPO, revision="main"),))


def test_columns_named_in_the_pin(capsys, tmp_path, hub, monkeypatch):  # noqa: F811 (hub: the fixture)
    fine = [0, 0, 1, 1, 2, 2, 3, 3]
    coarse = [0, 0, 1, 1, 2, 2, 0, 0]  # a different labelling of the same rows
    train, test = cifar_parquet(fine, coarse), cifar_parquet([0, 1, 2, 3], [0, 1, 2, 0])
    paths = ("cifar100/train-00000-of-00001.parquet", "cifar100/test-00000-of-00001.parquet")
    hub.files[(TRAIN_REPO, REV, paths[0])] = train
    hub.files[(TRAIN_REPO, REV, paths[1])] = test
    pins = (pin(paths[0], "train", train), pin(paths[1], "test", test))

    # the default columns (image, label) are refused, naming the columns the file has
    register(monkeypatch, HubParquet(TRAIN_REPO, REV, pins), 4)
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "img: struct<bytes: binary" in err and "fine_label: int64, coarse_label: int64" in err
    assert not (tmp_path / "datasets-v2" / NAME).exists()

    # the pin names img + fine_label: 4 fine classes with their names, coarse_label ignored
    source = HubParquet(TRAIN_REPO, REV, pins, image_column="img", label_column="fine_label")
    register(monkeypatch, source, 4)
    code, out, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 0, err
    ds = datasets.fetch_dataset(NAME, tmp_path)
    assert ds.y_train.tolist() == fine and ds.y_test.tolist() == [0, 1, 2, 3]
    assert ds.class_names == tuple(FINE)
