"""A folder where a user passes one: ``suite = FOLDER`` (one task per dataset in it) and ``tasks = PATH,...``
(each a task of its own), trained for real by ``largemeta train`` at a tiny size."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from largemeta.cli import main
from largemeta.data.tasks.suite import load_suite
from largemeta.errors import UserError

TINY = ["--steps", "4", "--k", "2", "--set", "width=4", "--set", "batch_size=4", "--device", "cpu"]


def _dataset(root, classes=("a", "b"), per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_a_folder_of_datasets_is_a_suite(tmp_path):
    _dataset(tmp_path / "mine" / "birds")
    _dataset(tmp_path / "mine" / "cars", classes=("x", "y", "z"), seed=1)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "mine" / "toys.npz", x=x, y=np.arange(20) % 2)
    (tmp_path / "mine" / "notes.txt").write_text("not a dataset")
    suite = load_suite(tmp_path / "mine")
    assert [t.name for t in suite.meta_train] == ["birds", "cars", "toys"]
    assert suite.meta_train[0].dataset == str(tmp_path / "mine" / "birds")
    assert suite.meta_test == ()


def test_train_on_a_suite_folder(tmp_path, capsys):
    _dataset(tmp_path / "mine" / "birds")
    _dataset(tmp_path / "mine" / "cars", seed=1)
    run = tmp_path / "run"
    code = main(["train", "--out", str(run), "--set", f"suite={tmp_path / 'mine'}", "--json", *TINY])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["meta_updates"] > 0
    assert json.loads((run / "config.json").read_text())["suite"] == str(tmp_path / "mine")


def test_train_on_task_folders(tmp_path, capsys):
    a, b = _dataset(tmp_path / "birds"), _dataset(tmp_path / "cars", seed=1)
    code = main(["train", "--out", str(tmp_path / "run"), "--set", f"tasks={a},{b}", "--json", *TINY])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["meta_updates"] > 0


def test_one_dataset_given_as_a_suite_is_refused_saying_what_works(tmp_path):
    root = _dataset(tmp_path / "birds")
    with pytest.raises(UserError, match=rf"one dataset .* set tasks={root}"):
        load_suite(root)


def test_an_empty_suite_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no datasets"):
        load_suite(tmp_path / "empty")


def test_two_task_folders_of_one_name_are_refused(tmp_path):
    a, b = _dataset(tmp_path / "x" / "birds"), _dataset(tmp_path / "y" / "birds")
    code = main(["train", "--out", str(tmp_path / "run"), "--set", f"tasks={a},{b}", "--dry-run", *TINY])
    assert code == 2
    assert not (tmp_path / "run").exists()
