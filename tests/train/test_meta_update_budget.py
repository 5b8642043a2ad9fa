"""No silent no-ops: a budget that holds no meta-update is warned about in one line, and every trained run
reports φ's meta-updates (``train --json``, each experiment's results.json), counted by hand here.

The schedule is the algorithm table's: a plain algorithm meta-updates every K inner steps, CTS every
``meta_every`` steps (1 by default)."""

import json
import subprocess
import sys

import pytest

from cli_runs import env, sets
from largemeta.cli import main
from largemeta.train.budget import meta_update_every, meta_updates, no_meta_update
from largemeta.train.config import from_mapping


def stderr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("algo", "k", "meta_every", "every"),
    [("reptile", 100, 1, 100), ("leap", 7, 1, 7), ("fomaml", 5, 1, 5), ("imaml", 3, 1, 3), ("cts", 100, 1, 1)]
    + [("cts", 100, 10, 10), ("cts-leap", 8, 4, 4)],
)
def test_the_schedule_comes_from_the_algorithm_table(tiny_suite, tiny_config, algo, k, meta_every, every):
    cfg = from_mapping(tiny_config(tiny_suite, algo=algo, k=k, meta_every=meta_every))
    assert meta_update_every(cfg) == every
    assert meta_updates(cfg, every - 1) == 0 and meta_updates(cfg, 4 * every - 1) == 3


def test_joint_training_has_no_meta_update_and_no_warning(tiny_suite, tiny_config):
    cfg = from_mapping(tiny_config(tiny_suite, algo="multitask", k=100))
    assert meta_update_every(cfg) is None and meta_updates(cfg, 60) == 0
    assert no_meta_update(cfg, 60, budget="--steps 60") is None


def test_the_warning_says_what_to_change(tiny_suite, tiny_config):
    cfg = from_mapping(tiny_config(tiny_suite, algo="reptile", k=100))
    assert no_meta_update(cfg, 60, budget="--steps 60") == (
        "reptile with K=100 meta-updates every 100 steps; --steps 60 holds none: φ stays at its "
        "initialization — raise --steps to >= 100 or lower --set k=..."
    )
    assert no_meta_update(cfg, 100, budget="--steps 100") is None
    cts = from_mapping(tiny_config(tiny_suite, algo="cts", k=100, meta_every=50))
    assert "lower --set meta_every=..." in no_meta_update(cts, 49, budget="--steps 49")


def test_train_with_no_meta_update_in_its_budget_warns_in_one_line(tiny_suite, tiny_config, tmp_path):
    """A real CLI run: reptile with K=4 and --steps 3 trains, but warns (one line, also in log.txt)."""
    run = tmp_path / "run"
    cfg = tiny_config(tiny_suite, algo="reptile", k=4, log_every=3, checkpoint_every=3)
    out = subprocess.run(
        [sys.executable, "-m", "largemeta", "train", "--out", str(run), "--steps", "3", "--json", *sets(cfg)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    warned = [line for line in stderr_lines(out.stderr) if "holds none" in line]
    assert len(warned) == 1, out.stderr
    assert warned[0].endswith(
        "reptile with K=4 meta-updates every 4 steps; --steps 3 holds none: φ stays at its initialization "
        "— raise --steps to >= 4 or lower --set k=..."
    )
    assert json.loads(out.stdout)["meta_updates"] == 0
    assert warned[0] in (run / "log.txt").read_text()


def test_a_budget_with_a_meta_update_is_not_warned_about(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite, algo="reptile", k=4, log_every=4, checkpoint_every=4)
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "4", "--json", *sets(cfg)]) == 0
    captured = capsys.readouterr()
    assert "holds none" not in captured.err and json.loads(captured.out)["meta_updates"] == 1


@pytest.mark.parametrize(
    ("algo", "extra", "expected"),
    [
        ("reptile", {"k": 2}, 2),  # meta-updates at steps 2 and 4; step 5 starts a trajectory
        ("cts", {"k": 2}, 5),  # CTS: one every inner step
        ("cts", {"k": 4, "meta_every": 2}, 2),  # steps 2 and 4
        ("leap", {"k": 5}, 1),
        ("multitask", {"k": 2}, 0),  # joint training: none, by design
    ],
)
def test_train_json_reports_meta_updates(tiny_suite, tiny_config, tmp_path, capsys, algo, extra, expected):
    cfg = tiny_config(tiny_suite, algo=algo, log_every=5, checkpoint_every=5, **extra)
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "5", "--json", *sets(cfg)]) == 0
    assert json.loads(capsys.readouterr().out)["meta_updates"] == expected


def test_meta_updates_survive_resume(tiny_suite, tiny_config, tmp_path, capsys):
    """The controller counts from its step, which the checkpoint restores: 3 steps then 4 more at K=2 give
    the 3 meta-updates of 7 steps (at steps 2, 4, 6), in --json and in every metrics line."""
    run = tmp_path / "run"
    cfg = tiny_config(tiny_suite, algo="reptile", k=2, log_every=1, checkpoint_every=3)
    assert main(["train", "--out", str(run), "--steps", "3", "--json", *sets(cfg)]) == 0
    assert json.loads(capsys.readouterr().out)["meta_updates"] == 1
    assert main(["train", "--resume", str(run), "--steps", "7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["meta_updates"] == 3
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["meta_updates"]) for r in lines] == [(s, s // 2) for s in range(1, 8)]


def experiment(kind: str, out, cfg: dict, *args: str) -> list[str]:
    (out.parent / "c.toml").write_text("")
    argv = ["experiment", kind, "--config", str(out.parent / "c.toml"), "--out", str(out), *args]
    return [*argv, "--eval-steps", "2", "--seeds", "1", "--eval-batch-size", "8", "--json", *sets(cfg)]


def test_convergence_records_meta_updates_at_each_milestone_and_warns_before_the_first(
    tiny_suite, tiny_config, tmp_path, capsys
):
    """reptile with K=2 over 5 steps, milestones 1, 3, 5: 0, 1 and 2 meta-updates (each milestone resumes
    the run from its checkpoint, so the count comes back from a restored step); CTS: 1, 3, 5."""
    cfg = tiny_config(tiny_suite, k=2, log_every=1, checkpoint_every=100)
    argv = experiment("convergence", tmp_path / "E", cfg, "--algos", "scratch,reptile,cts", "--steps", "5")
    assert main([*argv, "--milestones", "0.2,0.6,1"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["milestones"] == [1, 3, 5]
    assert result["algorithms"]["reptile"]["meta_updates"] == {"1": 0, "3": 1, "5": 2}
    assert result["algorithms"]["cts"]["meta_updates"] == {"1": 1, "3": 3, "5": 5}
    assert "meta_updates" not in result["algorithms"]["scratch"]  # nothing trained: n/a
    saved = json.loads((tmp_path / "E" / "results.json").read_text())
    assert saved["algorithms"]["reptile"]["meta_updates"] == {"1": 0, "3": 1, "5": 2}
    warned = [line for line in stderr_lines(captured.err) if "none" in line and "meta-updates every" in line]
    assert len(warned) == 1, captured.err  # reptile's first milestone; CTS meta-updates at every step
    assert warned[0].endswith(
        "reptile with K=2 meta-updates every 2 steps; milestone 1 of --steps 5 holds none: φ stays at its "
        "initialization — raise --steps so that each milestone reaches 2 steps, or lower --set k=..."
    )
    assert warned[0] in (tmp_path / "E" / "log.txt").read_text()  # the results folder keeps it too


@pytest.mark.slow
def test_k_ablation_tune_and_pretrained_record_meta_updates(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite, log_every=5, checkpoint_every=100)
    argv = experiment("k-ablation", tmp_path / "kab", cfg, "--algos", "reptile,cts", "--ks", "2,8")
    assert main([*argv, "--steps", "5"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    # reptile: 5 // 2 = 2 at K = 2, none at K = 8; CTS (meta_every capped at K): 5 at each K
    assert result["meta_updates"] == {"reptile": {"2": 2, "8": 0}, "cts": {"2": 5, "8": 5}}
    warned = [line for line in stderr_lines(captured.err) if "holds none" in line]
    assert len(warned) == 1 and warned[0].endswith(
        "reptile with K=8 meta-updates every 8 steps; --steps 5 holds none: φ stays at its initialization "
        "— raise --steps to >= 8 or drop K=8 from --ks"
    )

    tune = experiment("tune", tmp_path / "tune", tiny_config(tiny_suite, k=2, checkpoint_every=100))
    tune += ["--algos", "reptile", "--betas", "0.1,1", "--val-steps", "2", "--val-seeds", "1"]
    assert main([*tune, "--val-train-size", "16", "--steps", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["meta_updates"] == {"reptile": {"0.1": 2, "1": 2}}

    pre = experiment("pretrained", tmp_path / "pre", tiny_config(tiny_suite, k=2, checkpoint_every=100))
    pre += ["--algos", "reptile", "--init", str(tmp_path / "kab" / "reptile_k2"), "--sizes", "8"]
    assert main([*pre, "--steps", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["meta_updates"] == {"reptile": 1}
    assert json.loads((tmp_path / "pre" / "results.json").read_text())["meta_updates"] == {"reptile": 1}
