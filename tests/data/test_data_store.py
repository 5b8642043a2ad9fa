"""The dataset cache heals or refuses clearly: every array verified against the sha256 recorded at conversion,
damaged registry entries converted again, others refused in one line; version 0.1's caches keep working.

Each case works in its own temporary cache (``--data-dir``): the shared cache is only read (the scikit-learn
wheel that the digits dataset is converted from is copied out of it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import largemeta
from cli_runs import cli, one_line, tree
from largemeta.data.sources.datasets import fetch_dataset, is_cached
from largemeta.data.store import cached as store
from largemeta.data.store.arrays import ArrayDataset
from largemeta.data.store.cache import data_dir
from largemeta.errors import UserError

SRC = str(Path(largemeta.__file__).resolve().parents[1])


@pytest.fixture
def digits_cache(tmp_path, builtin):
    """A private cache holding only the scikit-learn wheel the digits dataset is converted from."""
    builtin("digits")  # makes sure the shared cache has the wheel (fetched once, through pip)
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    for wheel in (data_dir() / "downloads").glob("scikit_learn-*.whl"):
        shutil.copy(wheel, cache / "downloads" / wheel.name)
    return cache


@pytest.fixture
def dogs(tmp_path, image_folder):
    """A cache holding ``stanford_dogs`` built from a local folder: no registry can rebuild it."""
    cache = tmp_path / "dogs-cache"
    fetch_dataset("stanford_dogs", cache, root=image_folder)
    return cache


def write_v1_entry(cache: Path, ds: ArrayDataset) -> Path:
    """What version 0.1 wrote: ``datasets/<name>/data.npz`` and a format-1 ``meta.json``."""
    folder = cache / "datasets" / ds.name
    folder.mkdir(parents=True)
    np.savez(folder / "data.npz", x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    meta = {"format": 1, "name": ds.name, "class_names": list(ds.class_names), "notes": ds.notes, "extra": {}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def small_dataset(name="toy") -> ArrayDataset:
    rng = np.random.default_rng(0)
    return ArrayDataset(
        name,
        rng.integers(0, 256, (30, 5, 5, 1), dtype=np.uint8),
        np.arange(30) % 3,
        rng.integers(0, 256, (9, 5, 5, 1), dtype=np.uint8),
        np.arange(9) % 3,
        ("a", "b", "c"),
    )


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "bitflip":  # in place, with the times put back: only the ctime and the content tell
        st = path.stat()
        data[len(data) - 7] ^= 0x10
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif how == "garbage":
        path.write_bytes(b"{not json")
    elif how == "delete":
        path.unlink()
    else:
        raise AssertionError(how)


# ------------------------------------------------------------------------------------------------ format 2


def test_entry_round_trip_is_memory_mapped_and_stamped(tmp_path, monkeypatch):
    ds = small_dataset()
    folder = tmp_path / "e"
    store.write_entry(folder, ds)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format"] == 2 and set(meta["arrays"]) == set(store.ARRAYS)
    for key, info in meta["arrays"].items():
        assert hashlib.sha256((folder / info["file"]).read_bytes()).hexdigest() == info["sha256"], key
    hashed = []
    real = store.sha256_file
    monkeypatch.setattr(store, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    back = store.read_entry(folder, "toy")
    assert isinstance(back.x_train, np.memmap) and np.array_equal(back.x_train, ds.x_train)
    assert back.class_names == ds.class_names and np.array_equal(back.y_test, ds.y_test)
    assert hashed == []  # written here, stamped as written: trusted without hashing
    (folder / "verified.json").unlink()
    store.read_entry(folder, "toy")
    assert sorted(hashed) == sorted(f"{k}.npy" for k in store.ARRAYS)  # no stamp: every array hashed once
    store.read_entry(folder, "toy")
    assert len(hashed) == 4  # the stamp written by that check vouches from now on


@pytest.mark.parametrize(
    "target, how, needle",
    [
        ("x_train.npy", "truncate", "truncated or altered"),
        ("x_train.npy", "bitflip", "sha256 differs"),
        ("y_test.npy", "delete", "missing"),
        ("meta.json", "garbage", "not valid JSON"),
    ],
)
def test_every_damage_is_found_and_names_the_file(tmp_path, target, how, needle):
    folder = tmp_path / "e"
    store.write_entry(folder, small_dataset())
    damage(folder / target, how)
    with pytest.raises(store.Damaged) as err:
        store.read_entry(folder, "toy")
    assert err.value.path.name == target and needle in err.value.reason


# ------------------------------------------------------------------------------------------------ healing


@pytest.mark.network
@pytest.mark.parametrize(
    "target, how",
    [
        ("x_train.npy", "truncate"),
        ("x_train.npy", "bitflip"),
        ("y_train.npy", "delete"),
        ("meta.json", "garbage"),
    ],
)
def test_a_damaged_registry_entry_is_converted_again(digits_cache, capsys, target, how):
    reference = fetch_dataset("digits", digits_cache)
    x = np.array(reference.x_train)
    damage(digits_cache / "datasets-v2" / "digits" / target, how)
    healed = fetch_dataset("digits", digits_cache)
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "digits is damaged" in err and target in err and "converting it again" in err
    )
    assert np.array_equal(healed.x_train, x)
    fetch_dataset("digits", digits_cache)
    assert capsys.readouterr().err == ""  # healed for good


@pytest.mark.parametrize(
    "target, how",
    [
        ("x_train.npy", "truncate"),
        ("x_train.npy", "bitflip"),
        ("y_test.npy", "delete"),
        ("meta.json", "garbage"),
    ],
)
def test_a_damaged_entry_without_a_registry_is_refused_in_one_line(dogs, target, how):
    damage(dogs / "datasets-v2" / "stanford_dogs" / target, how)
    before = tree(dogs)
    with pytest.raises(UserError) as err:
        fetch_dataset("stanford_dogs", dogs)
    msg = str(err.value)
    assert (
        "\n" not in msg and target in msg and "largemeta data fetch stanford_dogs --force --root DIR" in msg
    )
    assert tree(dogs) == before  # nothing touched


# ------------------------------------------------------------------------------------------------ version 0.1


def test_a_v0_1_entry_is_migrated_and_left_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEMETA_OFFLINE", "1")
    from largemeta.data.sources import datasets

    ds = small_dataset("digits")
    old = write_v1_entry(tmp_path, ds)
    before = tree(old)
    assert is_cached("digits", tmp_path)
    got = datasets.fetch_dataset("digits", tmp_path)
    assert np.array_equal(got.x_train, ds.x_train) and got.class_names == ds.class_names
    assert isinstance(got.x_train, np.memmap)  # now read from the format-2 entry
    assert store.has_entry(tmp_path / "datasets-v2" / "digits")
    assert tree(old) == before  # version 0.1 installs sharing the cache still find theirs


def test_a_v0_1_entry_in_a_read_only_cache_is_read_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEMETA_OFFLINE", "1")
    ds = small_dataset("digits")
    write_v1_entry(tmp_path, ds)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store, "atomic_open", read_only)
    monkeypatch.setattr(Path, "mkdir", read_only)
    got = fetch_dataset("digits", tmp_path)
    assert np.array_equal(got.x_test, ds.x_test) and not (tmp_path / "datasets-v2" / "digits").exists()


@pytest.mark.parametrize("how", ["truncate", "bitflip"])
def test_a_damaged_v0_1_npz_is_found_by_its_crc(tmp_path, how):
    folder = write_v1_entry(tmp_path, small_dataset("digits"))
    damage(folder / "data.npz", how)
    with pytest.raises(store.Damaged) as err:
        store.read_v1(folder, "digits")
    assert err.value.path.name == "data.npz"


@pytest.mark.network
def test_a_damaged_v0_1_registry_entry_heals_into_format_2(digits_cache, capsys):
    reference = np.array(fetch_dataset("digits", digits_cache).x_test)
    shutil.rmtree(digits_cache / "datasets-v2")
    folder = write_v1_entry(digits_cache, small_dataset("digits"))
    damage(folder / "data.npz", "truncate")
    healed = fetch_dataset("digits", digits_cache)
    assert "data.npz" in capsys.readouterr().err and np.array_equal(healed.x_test, reference)


# ------------------------------------------------------------------------------------------------ the CLI


def dogs_suite(tmp_path: Path) -> Path:
    suite = tmp_path / "dogs.toml"
    suite.write_text(
        'name = "dogs"\n[defaults]\nimage_size = 16\nchannels = 1\n'
        '[[meta_train]]\nname = "d"\ndataset = "stanford_dogs"\n'
        '[[meta_test]]\nname = "t"\ndataset = "stanford_dogs"\n'
    )
    return suite


def test_every_command_refuses_a_damaged_entry_in_one_line(dogs, tmp_path, capsys):
    damage(dogs / "datasets-v2" / "stanford_dogs" / "x_train.npy", "bitflip")
    suite = dogs_suite(tmp_path)
    before = tree(dogs)
    commands = {
        "data info": ["data", "info", "stanford_dogs", "--data-dir", str(dogs)],
        "data fetch": ["data", "fetch", "stanford_dogs", "--data-dir", str(dogs)],
        "train": [
            "train", "--out", str(tmp_path / "run"), "--device", "cpu", "--steps", "2",
            "--set", f"suite={suite}", "--set", f"data_dir={dogs}", "--set", "width=4",
        ],
        "evaluate": [
            "evaluate", "--init", "scratch", "--suite", str(suite), "--steps", "1", "--seeds", "1",
            "--image-size", "16", "--data-dir", str(dogs),
        ],
    }  # fmt: skip
    for name, argv in commands.items():
        code, _, err = cli(capsys, *argv)
        assert one_line(code, err, "x_train.npy", "--force"), (name, code, err)
    assert tree(dogs) == before
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_cache_path_that_is_a_file_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LARGEMETA_OFFLINE", "1")
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    suite = tmp_path / "digits.toml"
    suite.write_text('name = "d"\n[[meta_train]]\nname = "d"\ndataset = "digits"\n')
    commands = {
        "data info": ["data", "info", "digits", "--data-dir", str(blocker)],
        "data fetch": ["data", "fetch", "digits", "--data-dir", str(blocker)],
        "train": [
            "train", "--out", str(tmp_path / "run"), "--device", "cpu", "--steps", "2",
            "--set", f"suite={suite}", "--set", f"data_dir={blocker}",
        ],
        "evaluate": [
            "evaluate", "--init", "scratch", "--tasks", "digits", "--steps", "1", "--seeds", "1",
            "--data-dir", str(blocker),
        ],
    }  # fmt: skip
    for name, argv in commands.items():
        code, _, err = cli(capsys, *argv)
        assert one_line(code, err, "cannot write to the dataset cache", "a file stands"), (name, err)
    assert blocker.read_text() == "not a folder"


def test_a_read_only_cache_is_refused_in_one_line_when_it_must_be_written(tmp_path, capsys, monkeypatch):
    import tempfile as tempfile_module

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    (tmp_path / "cache").mkdir()
    monkeypatch.setattr(tempfile_module, "mkstemp", denied)  # what a read-only folder answers
    monkeypatch.setattr(Path, "mkdir", denied)
    code, _, err = cli(capsys, "data", "fetch", "digits", "--data-dir", str(tmp_path / "cache"))
    assert one_line(code, err, "cannot write to the dataset cache", "Permission denied")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_valid_entry_in_a_read_only_cache_still_serves(tmp_path, monkeypatch):
    store.write_entry(tmp_path / "datasets-v2" / "digits", small_dataset("digits"))
    (tmp_path / "datasets-v2" / "digits" / "verified.json").unlink()

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store, "atomic_write_json", denied)
    got = fetch_dataset("digits", tmp_path)  # hashed, and the stamp silently not written
    assert got.num_classes == 3 and not (tmp_path / "datasets-v2" / "digits" / "verified.json").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_a_really_read_only_cache_folder(tmp_path):
    cache = tmp_path / "ro"
    cache.mkdir(mode=0o500)
    out = subprocess.run(
        [sys.executable, "-m", "largemeta", "data", "fetch", "digits", "--data-dir", str(cache)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Permission denied" in out.stderr


@pytest.mark.slow
def test_processes_writing_one_entry_at_once_leave_it_whole(tmp_path):
    """Every file is renamed into place whole and meta.json is written last, so however the writes of
    concurrent conversions interleave, the entry they leave reads back verified."""
    ds = small_dataset("toy")
    np.savez(tmp_path / "toy.npz", x=np.asarray(ds.x_train)[..., 0], y=ds.y_train)
    code = (
        "import sys; from pathlib import Path; from largemeta.data.store import cached as store;"
        "from largemeta.data.sources.byo import load_npz; ds = load_npz(Path(sys.argv[1]));"
        "[store.write_entry(Path(sys.argv[2]), ds) for _ in range(5)]"
    )
    target = tmp_path / "entry"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "toy.npz"), str(target)],
            env={**os.environ, "PYTHONPATH": SRC},
        )
        for _ in range(3)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    back = store.read_entry(target, "toy")  # verified: every array matches the meta.json that vouches for it
    assert len(back.y_train) + len(back.y_test) == len(ds.y_train)


def test_cache_files_are_created_with_the_users_umask(tmp_path):
    from largemeta.data.store.arrays import ArrayDataset
    from largemeta.data.store.cached import read_entry, write_entry

    x = np.zeros((4, 8, 8, 1), np.uint8)
    ds = ArrayDataset("toy", x, np.arange(4) % 2, x[:2], np.arange(2), ("a", "b"))
    old = os.umask(0o027)
    try:
        write_entry(tmp_path / "toy", ds)
        read_entry(tmp_path / "toy", "toy")  # verifying writes its stamp file too
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "toy").iterdir() if p.is_file()}
    assert len(modes) >= 5 and set(modes.values()) == {oct(0o640)}, modes
