"""An experiment stopped while its first run folder is being made continues with the same command: a run
folder is started with its run.json (the mark a new run may take it again by), and a folder a version-0.2
stop left with its config.json alone is taken again too; a folder holding another config.json is not.
"""

import json
import os
import signal

from cli_runs import sets
from largemeta.cli import main
from largemeta.errors import PREEMPTED_EXIT
from largemeta.runs import folder as runs_folder


def _argv(tiny_suite, tiny_config, tmp_path):
    (tmp_path / "c.toml").write_text("")
    cfg = tiny_config(tiny_suite, checkpoint_every=1000, log_every=2)
    argv = ["experiment", "convergence", "--config", str(tmp_path / "c.toml"), "--algos", "cts"]
    argv += ["--steps", "4", "--milestones", "1", "--eval-steps", "1", "--seeds", "1"]
    return [*argv, "--eval-batch-size", "8", "--out", str(tmp_path / "E"), *sets(cfg)]


def test_an_experiment_stopped_while_its_first_run_folder_is_made_continues(
    tiny_suite, tiny_config, tmp_path, capsys, monkeypatch
):
    original = runs_folder.write_identity

    def stopped_after(run_dir, identity):  # a real SIGTERM, right after the folder's first record
        original(run_dir, identity)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runs_folder, "write_identity", stopped_after)
    argv = _argv(tiny_suite, tiny_config, tmp_path)
    assert main(argv) == PREEMPTED_EXIT
    err = capsys.readouterr().err
    assert "run the same command again" in err, err
    assert "checkpoint.json" not in os.listdir(tmp_path / "E" / "cts")
    monkeypatch.setattr(runs_folder, "write_identity", original)
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "E" / "results.json").read_text())["complete"]


def test_a_folder_holding_a_runs_config_alone_is_taken_by_a_new_run(
    tiny_suite, tiny_config, tmp_path, capsys
):
    cfg = tiny_config(tiny_suite, steps=2)
    run = tmp_path / "R"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**cfg, "algo": "cts", "seed": 0}))  # what 0.2 left
    assert main(["train", "--out", str(run), "--steps", "2", *sets(cfg)]) == 0, capsys.readouterr().err


def test_a_folder_holding_another_config_json_is_refused(tiny_suite, tiny_config, tmp_path, capsys):
    run = tmp_path / "R"
    run.mkdir()
    (run / "config.json").write_text('{"learning_rate": 3}')
    code = main(["train", "--out", str(run), "--steps", "2", *sets(tiny_config(tiny_suite))])
    err = capsys.readouterr().err
    assert code == 2 and "is not a largemeta run folder" in err and err.count("\n") == 1, err
