"""The config you can see: ``config keys`` lists every key from the config's own definition, ``config show``
prints a resolved config that reads back, ``train --dry-run`` checks a run and writes nothing."""

import json
import re

from largemeta.cli import main
from largemeta.train.config import FIELDS, TrainConfig, load_config


def test_config_keys_lists_every_key_with_type_default_and_meaning(capsys):
    assert main(["config", "keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(FIELDS)
    by_key = {line.split()[0]: line for line in lines}
    assert re.match(r"meta_lr +a number +default 0.01 +Meta learning rate β\.$", by_key["meta_lr"])
    assert "tensorboard, mlflow, wandb" in by_key["trackers"]
    assert main(["config", "keys", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["doc"] for r in rows)  # every key documented where it is defined
    assert {r["key"]: r["default"] for r in rows} == TrainConfig().to_dict()


def test_config_show_prints_toml_that_reads_back_to_the_same_config(capsys, tmp_path):
    args = ["--config", "offline", "--set", "trackers=mlflow,wandb", "--set", "meta_lr=0.003"]
    assert main(["config", "show", *args]) == 0
    text = capsys.readouterr().out
    assert 'trackers = ["mlflow", "wandb"]\n' in text and "meta_lr = 0.003\n" in text
    (tmp_path / "shown.toml").write_text(text)
    want = load_config("offline", {"trackers": ("mlflow", "wandb"), "meta_lr": 0.003})
    assert load_config(tmp_path / "shown.toml") == want
    assert main(["config", "show", "--set", "k=0"]) == 2
    assert capsys.readouterr().err.startswith("largemeta: error: config key 'k' out of range")


def test_train_dry_run_checks_and_plans_without_writing(tiny_suite, tiny_config, tmp_path, capsys):
    from cli_runs import sets

    run = tmp_path / "run"
    cfg = tiny_config(tiny_suite, log_every=10, checkpoint_every=30)
    assert main(["train", "--out", str(run), "--steps", "60", "--dry-run", *sets(cfg)]) == 0
    out = capsys.readouterr().out
    assert not run.exists()
    assert "# plan: train cts to step 60 (60 steps) on cpu" in out
    assert (
        "# tasks: 3 (t0, t1, t2)" in out
        and "15 trajectories; 60 meta-updates; 6 metrics lines; 2 checkpoints" in out
    )
    assert main(["train", "--out", str(run), "--steps", "60", "--dry-run", "--json", *sets(cfg)]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["metrics_lines"] == 6 and plan["tasks"] == ["t0", "t1", "t2"] and not run.exists()
    # what a run would refuse, the dry run refuses: a task the suite lacks, an unknown tracker
    bad = tiny_config(tiny_suite, tasks="t0,nope")
    assert main(["train", "--out", str(run), "--dry-run", *sets(bad)]) == 2
    assert "nope" in capsys.readouterr().err and not run.exists()
