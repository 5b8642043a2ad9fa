"""A resumed run trains on the data its folder records: the suite's resolved tasks and each dataset's contents
(an .npz's sha256, a folder's listing, a registered dataset's cached arrays) are pinned in the run's
identity and checkpoint; ``--resume`` refuses a difference in one line, or with --allow-data-change records
it as ``data_changes``. Paths in the config are absolute, so a resume works from any working directory.

Real runs of the command line over real files, edited between them.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_runs import cli, sets, tree
from largemeta.cli import main


def _identity(run: Path) -> list[dict]:
    return [
        json.loads((run / "run.json").read_text()),
        json.loads((run / "checkpoint.json").read_text())["info"]["identity"],
    ]


@pytest.fixture
def run6(tiny_suite, tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = tiny_config(tiny_suite, checkpoint_every=6)
    code, _, err = cli(capsys, "train", "--out", str(run), "--steps", "6", *sets(cfg))
    assert code == 0, err
    return run


def _refused(run: Path, capsys, *extra: str) -> str:
    before = tree(run, locks=False)
    code, _, err = cli(capsys, "train", "--resume", str(run), "--steps", "12", *extra)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "--allow-data-change" in err, err
    assert tree(run, locks=False) == before  # nothing written
    return err


def test_the_data_a_run_reads_is_recorded(run6, tiny_suite):
    for identity in _identity(run6):
        data = identity["data"]
        assert data["suite"]["source"] == str(tiny_suite) and len(data["suite"]["sha256"]) == 64
        assert [t["name"] for t in data["suite"]["tasks"]] == ["t0", "t1", "t2"]
        npz = data["datasets"][str(tiny_suite.parent / "task0.npz")]
        assert len(npz["sha256"]) == 64 and npz["bytes"] > 0


def test_an_edited_suite_is_refused_on_resume(run6, tiny_suite, capsys):
    tiny_suite.write_text(tiny_suite.read_text().replace("image_size = 16", "image_size = 12"))
    err = _refused(run6, capsys)
    assert "task 't0': image_size 16 -> 12" in err, err


def test_a_suite_comment_is_not_a_change_of_data(run6, tiny_suite, capsys):
    tiny_suite.write_text("# a comment\n" + tiny_suite.read_text())
    code, _, err = cli(capsys, "train", "--resume", str(run6), "--steps", "12")
    assert code == 0, err
    assert "tasks it trains are unchanged" in err


def test_a_changed_npz_is_refused_and_an_allowed_change_recorded(run6, tiny_suite, capsys):
    npz = tiny_suite.parent / "task1.npz"
    with np.load(npz) as f:
        x, y = f["x"], f["y"]
    np.savez(npz, x=255 - x, y=y)
    err = _refused(run6, capsys)
    assert f"file {str(npz)!r} changed" in err, err
    code, _, err = cli(capsys, "train", "--resume", str(run6), "--steps", "12", "--allow-data-change")
    assert code == 0, err
    for identity in _identity(run6):
        (change,) = identity["data_changes"]
        assert change["step"] == 6 and "changed" in change["changed"][0]
        assert identity["data"] == change["to"]
    code, _, err = cli(capsys, "train", "--resume", str(run6), "--steps", "18")
    assert code == 0, err  # the new data is the run's now


def test_an_npz_touched_but_unchanged_continues(run6, tiny_suite, capsys):
    npz = tiny_suite.parent / "task2.npz"
    os.utime(npz, ns=(1, 1))
    code, _, err = cli(capsys, "train", "--resume", str(run6), "--steps", "12")
    assert code == 0, err


def _folder_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            px = rng.integers(0, 255, (16, 16), dtype=np.uint8)
            Image.fromarray(px).save(root / c / f"{i}.png")
    return root


def test_a_changed_folder_is_refused_on_resume(tmp_path, tiny_config, capsys):
    images = _folder_dataset(tmp_path / "images")
    suite = tmp_path / "folder.toml"
    suite.write_text(
        "[defaults]\nimage_size = 16\nchannels = 1\nflip = false\n"
        f'[[meta_train]]\nname = "f"\ndataset = "{images}"\n'
    )
    run = tmp_path / "run"
    cfg = tiny_config(suite, checkpoint_every=6)
    code, _, err = cli(capsys, "train", "--out", str(run), "--steps", "6", *sets(cfg))
    assert code == 0, err
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(images / "a" / "new.png")
    err = _refused(run, capsys)
    assert f"folder {str(images)!r} changed (20 files" in err and "21 files" in err, err


def test_dry_run_refuses_changed_data(run6, tiny_suite, capsys):
    tiny_suite.write_text(tiny_suite.read_text().replace("crop_padding = 2", "crop_padding = 1"))
    code, _, err = cli(capsys, "train", "--resume", str(run6), "--steps", "12", "--dry-run")
    assert code == 2 and "crop_padding 2 -> 1" in err and err.count("\n") == 1, err


def test_allow_data_change_without_resume_is_refused(tiny_suite, tiny_config, tmp_path, capsys):
    code, _, err = cli(
        capsys, "train", "--out", str(tmp_path / "r"), "--allow-data-change", *sets(tiny_config(tiny_suite))
    )
    assert code == 2 and "--allow-data-change goes with --resume" in err


# absolute paths ------------------------------------------------------------------------------------------
def test_relative_paths_are_stored_absolute_and_resume_from_anywhere(
    tiny_suite, tiny_config, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(Path(tiny_suite.name), checkpoint_every=6, data_dir="cache")
    code, _, err = cli(capsys, "train", "--out", "run", "--steps", "6", *sets(cfg))
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["suite"] == str(tiny_suite) and saved["data_dir"] == str(tmp_path / "cache")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli(capsys, "train", "--resume", str(tmp_path / "run"), "--steps", "12")
    assert code == 0, err


def test_config_show_prints_absolute_paths(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "show", "--set", "suite=my.toml", "--set", "data_dir=~/d", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["suite"] == str(tmp_path / "my.toml") and shown["data_dir"] == os.path.expanduser("~/d")


def test_a_moved_suite_is_one_line_naming_the_recorded_path(run6, tiny_suite, capsys):
    tiny_suite.rename(tiny_suite.with_suffix(".moved"))
    before = tree(run6, locks=False)
    code, _, err = cli(capsys, "train", "--resume", str(run6), "--steps", "12")
    assert code == 2 and err.count("\n") == 1 and str(tiny_suite) in err and "recorded" in err, err
    assert tree(run6, locks=False) == before
