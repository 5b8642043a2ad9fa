"""The convergence experiment with a tuning stage: Reptile at its own best β, chosen on the meta-training
tasks' held-out images (never the meta-test targets), then trained milestone to milestone at that β."""

import json

from largemeta.experiments import Common, EvalSettings, convergence
from largemeta.train.config import from_mapping


def test_the_tuned_algorithm_runs_at_its_best_validation_beta(tiny_suite, tiny_config, tmp_path):
    cfg = from_mapping(tiny_config(tiny_suite, steps=8))
    settings = EvalSettings(steps=2, seeds=2, batch_size=8)
    validation = EvalSettings(steps=2, seeds=1, batch_size=8, train_size=20)
    common = Common(["cts", "reptile"], tmp_path / "exp", settings)
    result = convergence(
        cfg, common, fractions=(0.5, 1.0), tune={"reptile": (0.1, 1.0)}, tune_fraction=0.5,
        validation=validation,
    )  # fmt: skip
    tuning = result["tuning"]["reptile"]
    assert set(tuning["validation"]) == {"0.1", "1"} and tuning["steps"] == 4
    assert tuning["best"] == max(tuning["validation"], key=tuning["validation"].get)
    # scored on the meta-training tasks, never on the target
    assert tuning["targets"] == ["t0", "t1", "t2"] and "target" not in tuning["targets"]
    assert tuning["meta_updates"] == {"0.1": 1, "1": 1}  # K = 4: one meta-update in 4 steps
    best = float(tuning["best"])
    assert (
        result["algorithms"]["reptile"]["beta"] == best and result["algorithms"]["cts"]["beta"] == cfg.meta_lr
    )
    # the convergence run itself was trained at that β, and each tuning run at its own
    assert json.loads((tmp_path / "exp" / "reptile" / "config.json").read_text())["meta_lr"] == best
    for beta in ("0.1", "1"):
        run = json.loads((tmp_path / "exp" / "tuning" / f"reptile_beta{beta}" / "config.json").read_text())
        assert run["meta_lr"] == float(beta) and run["steps"] == 4
    assert result["request"]["tune"] == {"reptile": [0.1, 1.0]} and result["done"] == [
        "cts @ 4 steps",
        "cts @ 8 steps",
        "tuning reptile, β = 0.1",
        "tuning reptile, β = 1",
        "reptile @ 4 steps",
        "reptile @ 8 steps",
    ]
    assert {r["baseline"] for r in result["steps_to_reach"]} == {"reptile"}
    # run again: nothing is redone, the same choice stands
    again = convergence(
        cfg, common, fractions=(0.5, 1.0), tune={"reptile": (0.1, 1.0)}, tune_fraction=0.5,
        validation=validation,
    )  # fmt: skip
    assert again["tuning"] == result["tuning"] and again["done"] == result["done"]


def test_the_command_line_tunes_and_prints_it(tiny_suite, tiny_config, tmp_path, capsys):
    from cli_runs import sets
    from largemeta.cli import main

    (tmp_path / "c.toml").write_text("")
    argv = ["experiment", "convergence", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "x")]
    argv += ["--algos", "cts,reptile", "--steps", "4", "--milestones", "0.5,1", "--tune", "reptile"]
    argv += ["--tune-betas", "0.1,1", "--tune-fraction", "0.5", "--eval-steps", "2", "--seeds", "2"]
    argv += ["--eval-batch-size", "8", "--json", *sets(tiny_config(tiny_suite))]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["tuning"]) == {"reptile"} and set(result["tuning"]["reptile"]["validation"]) == {
        "0.1",
        "1",
    }
    assert result["tuning"]["reptile"]["steps"] == 2 and result["request"]["tune_steps"] == 2
    assert [r["milestone"] for r in result["steps_to_reach"]] == [2, 4]
    assert main([*argv, "--tune-fraction", "0"]) == 2
    assert "tuning budget must be a fraction in (0, 1], got 0" in capsys.readouterr().err
