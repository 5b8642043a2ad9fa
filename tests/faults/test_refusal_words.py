"""Refusals say what is wrong and what to do, in the words of the case: a checkpoint.json that is a folder,
the bound tasks_per_trajectory really has, a tiny memory budget in bytes, a model file that is a folder, an
experiment rerun with another --steps.

Real runs of the command line (or the real placement rule) on real files.
"""

import json

import torch

from cli_runs import sets
from largemeta.cli import main
from largemeta.data.tasks.loader import choose_placement
from largemeta.train.config import MAX_STEPS


def _one_line(code, err, *words):
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_a_checkpoint_json_that_is_a_folder_is_named_so(tiny_suite, tiny_config, tmp_path, capsys):
    run = tmp_path / "R"
    assert main(["train", "--out", str(run), "--steps", "4", *sets(tiny_config(tiny_suite))]) == 0
    capsys.readouterr()
    for folder in run.glob("checkpoint-*"):  # no complete checkpoint beside it to recover
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    (run / "checkpoint.json").unlink()
    (run / "checkpoint.json").mkdir()
    code = main(["train", "--resume", str(run), "--steps", "8"])
    err = capsys.readouterr().err
    _one_line(code, err, "is a folder")
    assert "does not exist" not in err


def test_tasks_per_trajectory_names_its_real_bound(tiny_suite, tiny_config, capsys):
    code = main(["config", "show", "--set", "tasks_per_trajectory=99999999999999999999"])
    _one_line(code, capsys.readouterr().err, f"<= {MAX_STEPS}", "99999999999999999999")


def test_a_tiny_memory_budget_is_shown_in_bytes():
    placement, why = choose_placement("auto", 4096, torch.device("cpu"), 1e-9)
    assert placement == "stream" and "over the budget of 1 byte " in why and "0.00 GB" not in why, why


def test_a_model_file_that_is_a_folder_is_one_line(tiny_suite, tiny_config, tmp_path, capsys):
    (tmp_path / "dir.py").mkdir()
    cfg = tiny_config(tiny_suite, model=f"{tmp_path / 'dir.py'}:body")
    code = main(["train", "--out", str(tmp_path / "R"), "--steps", "2", *sets(cfg)])
    _one_line(code, capsys.readouterr().err, "is a folder, not a .py file")


def test_an_experiment_rerun_with_other_steps_says_what_to_do(tiny_suite, tiny_config, tmp_path, capsys):
    (tmp_path / "c.toml").write_text("")
    argv = ["experiment", "convergence", "--config", str(tmp_path / "c.toml"), "--algos", "cts"]
    argv += ["--milestones", "0.5,1", "--eval-steps", "1", "--seeds", "1", "--eval-batch-size", "8"]
    argv += ["--out", str(tmp_path / "E"), *sets(tiny_config(tiny_suite))]
    assert main([*argv, "--steps", "4"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    before = (tmp_path / "E" / "results.json").read_text()
    code = main([*argv, "--steps", "8"])
    err = capsys.readouterr().err
    _one_line(code, err, "continue it with --steps 4", "another --out", "--resume")
    assert (tmp_path / "E" / "results.json").read_text() == before
    assert json.loads(before)["complete"]
