"""Run folders are owned: one writer at a time (real processes racing), a folder holding something else is
refused before anything is written, and --resume trusts the checkpoint, never config.json.

Each refusal: exit code 2, one line on stderr, no traceback, every file there before byte for byte the same.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from checkpoint_edits import published_step, read_all
from cli_runs import env, sets, train_here, tree
from largemeta.cli import main


def one_line_error(code, err, needle=""):
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err


def largemeta_cli(*args):
    return [sys.executable, "-m", "largemeta", *args]


def test_two_trainers_racing_for_one_folder_and_a_resume_while_training(tiny_suite, tiny_config, tmp_path):
    run = tmp_path / "R"
    a = ["train", "--out", str(run), "--steps", "100000", *sets(tiny_config(tiny_suite))]
    b = ["train", "--out", str(run), "--steps", "100000", "--algo", "reptile", "--seed", "1"]
    b += sets(tiny_config(tiny_suite))
    procs = [
        subprocess.Popen(
            largemeta_cli(*x), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for x in (a, b)
    ]
    try:
        deadline = time.time() + 120
        while all(p.poll() is None for p in procs):  # the loser leaves at once
            assert time.time() < deadline
            time.sleep(0.05)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        err = loser.communicate()[1]
        assert loser.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert f"is in use by process {winner.pid}" in err or "already holds a run" in err, err
        while not (run / "checkpoint.json").exists():
            assert time.time() < deadline and winner.poll() is None
            time.sleep(0.05)
        # --resume while the winner trains: refused naming it; its checkpoint never goes back
        before = published_step(run)
        second = subprocess.run(
            largemeta_cli("train", "--resume", str(run), "--steps", "100000"),
            env=env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        one_line_error(second.returncode, second.stderr, f"is in use by process {winner.pid}")
        assert published_step(run) >= before
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            p.communicate(timeout=120)
    assert winner.returncode == 75  # preempted cleanly: checkpoint written, resume me
    # one run, the same in every file
    state = read_all(run)
    ours = state["config"]["algo"], state["config"]["seed"]
    assert ours == (("cts", 0) if winner is procs[0] else ("reptile", 1))
    assert (json.loads((run / "config.json").read_text())["algo"], state["config"]["seed"]) == ours
    assert (state["identity"]["algo"], state["identity"]["seed"]) == ours
    assert json.loads((run / "run.json").read_text())["run_id"] == state["identity"]["run_id"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] <= state["step"]
    folder = f"checkpoint-{state['step']:08d}"  # one checkpoint folder: the one the manifest names
    assert sorted(os.listdir(run)) == sorted(
        ["checkpoint.json", folder, "config.json", "log.txt", "metrics.jsonl", "run.json"]
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["--set", "tasks=bogus"],
        ["--set", "suite=/no/such/suite.toml"],
        ["--set", "tensorboard=true"],
        [],  # valid input: still not a folder of ours
    ],
    ids=["bad-task", "missing-suite", "tensorboard", "valid"],
)
def test_a_folder_of_someone_else_is_refused_before_anything_is_written(
    tiny_suite, tiny_config, tmp_path, capsys, extra
):
    folder = tmp_path / "P"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": 1}\n')
    (folder / "metrics.jsonl").write_text('{"mine": 2}\n')
    before = tree(folder)
    cfg = {**tiny_config(tiny_suite, steps=2), **dict(e.split("=", 1) for e in extra[1:])}
    code = main(["train", "--out", str(folder), "--steps", "2", *sets(cfg)])
    one_line_error(code, capsys.readouterr().err, "is not a largemeta run folder")
    assert tree(folder) == before and sorted(os.listdir(folder)) == ["config.json", "metrics.jsonl"]


def test_a_failed_new_run_leaves_no_folder_behind(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite, steps=2)
    code = main(["train", "--out", str(tmp_path / "new"), *sets(cfg), "--set", "tasks=bogus"])
    one_line_error(code, capsys.readouterr().err, "unknown meta-train task 'bogus'")
    assert not (tmp_path / "new").exists()


def test_evaluate_and_report_never_overwrite_what_they_did_not_write(tiny_suite, tmp_path, capsys):
    out = tmp_path / "E"
    out.mkdir()
    (out / "results.json").write_text('{"mine": 1}\n')
    before = tree(out)
    argv = ["evaluate", "--init", "scratch", "--suite", str(tiny_suite), "--steps", "1", "--seeds", "1"]
    one_line_error(main([*argv, "--out", str(out)]), capsys.readouterr().err, "already holds results.json")
    assert tree(out) == before
    # report: a report.md of the user's is refused; a report of its own is rewritten
    assert main([*argv, "--batch-size", "8", "--out", str(tmp_path / "ev")]) == 0
    (tmp_path / "ev" / "report.md").write_text("my notes\n")
    capsys.readouterr()
    one_line_error(main(["report", str(tmp_path / "ev")]), capsys.readouterr().err, "was not written by")
    assert (tmp_path / "ev" / "report.md").read_text() == "my notes\n"
    (tmp_path / "ev" / "report.md").unlink()
    assert main(["report", str(tmp_path / "ev")]) == 0
    assert main(["report", str(tmp_path / "ev")]) == 0  # its own report: rewritten
    assert not any(p.name.endswith(".lock") for p in (tmp_path / "ev").iterdir())


def test_resume_follows_the_checkpoint_not_an_edited_config_json(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite, steps=4, checkpoint_every=2, log_every=2)
    train_here(cfg, tmp_path / "straight")
    train_here({**cfg, "steps": 2}, tmp_path / "run")
    edited = json.loads((tmp_path / "run" / "config.json").read_text())
    edited.update(algo="reptile", meta_lr=0.5)
    (tmp_path / "run" / "config.json").write_text(json.dumps(edited))
    with pytest.warns(UserWarning, match="config.json' is not the checkpoint's config"):
        assert main(["train", "--resume", str(tmp_path / "run"), "--steps", "4"]) == 0
    assert "trained cts" in capsys.readouterr().out
    a = read_all(tmp_path / "straight")["shared"]["phi"]
    b = read_all(tmp_path / "run")["shared"]["phi"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["algo"] == "cts"  # the copy rewritten
    # a config.json that is not even an object: the same
    (tmp_path / "run" / "config.json").write_text("[1, 2]")
    with pytest.warns(UserWarning, match="is not the checkpoint's config"):
        assert main(["train", "--resume", str(tmp_path / "run"), "--steps", "4"]) == 0
    out = capsys.readouterr()
    assert "already at step 4" in out.out and "nan" not in out.out


def test_a_checkpoint_of_another_seed_copied_in_is_refused(tiny_suite, tiny_config, tmp_path, capsys):
    train_here(tiny_config(tiny_suite, steps=2), tmp_path / "a")
    train_here(tiny_config(tiny_suite, steps=2, seed=1), tmp_path / "b")
    shutil.rmtree(tmp_path / "a" / "checkpoint-00000002")
    shutil.copytree(tmp_path / "b" / "checkpoint-00000002", tmp_path / "a" / "checkpoint-00000002")
    shutil.copy(tmp_path / "b" / "checkpoint.json", tmp_path / "a" / "checkpoint.json")
    before = tree(tmp_path / "a")
    code = main(["train", "--resume", str(tmp_path / "a"), "--steps", "4"])
    one_line_error(code, capsys.readouterr().err, "(cts, seed 1), not of this folder's run")
    assert tree(tmp_path / "a") == before


def test_resume_refuses_a_flag_that_changes_the_run_and_a_flag_conflicting_with_set(
    tiny_suite, tiny_config, tmp_path, capsys
):
    cfg = tiny_config(tiny_suite, steps=2)
    train_here(cfg, tmp_path / "run")
    before = tree(tmp_path / "run")
    code = main(["train", "--resume", str(tmp_path / "run"), "--seed", "3", "--set", "algo=leap"])
    one_line_error(code, capsys.readouterr().err, "algo: 'cts' -> 'leap', seed: 0 -> 3")
    code = main(["train", "--out", str(tmp_path / "new"), *sets(cfg), "--k", "50"])
    one_line_error(code, capsys.readouterr().err, "--k 50 and --set k=4 disagree")
    assert tree(tmp_path / "run") == before and not (tmp_path / "new").exists()
