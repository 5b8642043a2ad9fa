"""The experiments and their report on tiny real runs: convergence, k-ablation, tune and pretrained, with
one or several meta-training seeds."""

import json

import pytest
import torch

from cli_runs import sets, train_here
from largemeta.cli import main
from largemeta.experiments import Common, EvalSettings, convergence, table
from largemeta.train.config import from_mapping


@pytest.mark.slow
def test_convergence_and_report(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = from_mapping(tiny_config(tiny_suite, steps=8))
    settings = EvalSettings(steps=3, seeds=2, batch_size=8)
    result = convergence(
        cfg, Common(["cts", "reptile", "scratch"], tmp_path / "exp", settings), fractions=(0.5, 1.0)
    )
    assert result["milestones"] == [4, 8]
    assert set(result["algorithms"]) == {"cts", "reptile", "scratch"}
    assert "| cts |" in table(result)
    assert (tmp_path / "exp" / "cts" / "checkpoint.json").exists()  # each algorithm's φ, usable as --init
    assert main(["report", str(tmp_path / "exp")]) == 0
    page = (tmp_path / "exp" / "report.html").read_text()
    # the figures: accuracy, steps to reach, loss
    assert page.count("data:image/png;base64,") == 3 and "Convergence" in page
    assert (tmp_path / "exp" / "report.md").exists()
    # recorded at run time: the environment, the protocol, a paired comparison of every two at each milestone
    env = result["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__ and env["python"].count(".") == 2
    assert set(env) == {"largemeta", "git_commit", "torch", "device", "python", "argv"}
    assert result["protocol"]["targets"] == ["target"] and result["protocol"]["fine_tuning_seeds"] == 2
    assert result["protocol"]["train_seeds"] == [cfg.seed] and result["protocol"]["fine_tuning_steps"] == 3
    found = {(c["a"], c["b"], c["at"]): c for c in result["comparisons"]}
    assert len(found) == 6 and ("cts", "scratch", "8 steps") in found
    c = found[("cts", "reptile", "8 steps")]
    cts, reptile = (
        result["algorithms"][a]["accuracy"]["8"]["tasks"]["target"]["per_seed"] for a in ("cts", "reptile")
    )
    diffs = [x - y for x, y in zip(cts, reptile, strict=True)]  # the same target and seeds: paired
    assert c["n"] == 2 and c["mean_diff"] == pytest.approx(sum(diffs) / 2) and c["unit"] == "fraction"
    assert "95 % t-interval over 1 target × 2 fine-tuning seeds of 1 meta-training run" in table(result)
    assert "cts − reptile at 8 steps" in page


def test_convergence_with_two_meta_training_runs(tiny_suite, tiny_config, tmp_path):
    cfg = from_mapping(tiny_config(tiny_suite, steps=4))
    settings = EvalSettings(steps=2, seeds=2, batch_size=8)
    common = Common(["cts", "scratch"], tmp_path / "exp", settings, train_seeds=2)
    result = convergence(cfg, common, fractions=(1.0,))
    cts = result["algorithms"]["cts"]
    assert set(cts["run_dirs"]) == {"0", "1"} and set(cts["losses"]) == {"0", "1"}
    assert (tmp_path / "exp" / "cts_seed1" / "checkpoint.json").exists()
    assert cts["accuracy"]["4"]["train_seeds"] == [0, 1]
    [c] = result["comparisons"]
    assert (c["a"], c["b"], c["at"], c["n"]) == ("cts", "scratch", "4 steps", 4)
    assert c["over"] == "1 target × 2 fine-tuning seeds × 2 meta-training runs"
    assert result["done"] == ["cts @ 4 steps (seed 0)", "cts @ 4 steps (seed 1)", "scratch"]
    assert main(["report", str(tmp_path / "exp")]) == 0
    md = (tmp_path / "exp" / "report.md").read_text()
    assert "× 2 meta-training runs" in md and "- train_seeds: [0, 1]" in md


def test_report_of_an_empty_folder_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no results.json" in capsys.readouterr().err


@pytest.mark.slow
def test_k_ablation_and_its_plot(tiny_suite, tiny_config, tmp_path, capsys):
    def k_ablation(config):
        args = ["experiment", "k-ablation", "--config", str(config), "--out", str(tmp_path / "kab")]
        args += ["--ks", "2,4", "--algos", "cts,reptile", "--steps", "4", "--eval-steps", "2", "--seeds", "2"]
        return main([*args, "--eval-batch-size", "8", "--json", *sets(tiny_config(tiny_suite))])

    code = k_ablation(tiny_suite.parent / "none.toml")
    assert code == 2 and "does not exist" in capsys.readouterr().err  # a missing config file is refused
    (tmp_path / "c.toml").write_text("")
    assert k_ablation(tmp_path / "c.toml") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ks"] == [2, 4] and set(result["algorithms"]["cts"]) == {"2", "4"}
    assert (tmp_path / "kab" / "k_ablation.png").exists() and (tmp_path / "kab" / "reptile_k4").is_dir()
    assert [(c["a"], c["b"], c["at"]) for c in result["comparisons"]] == [
        ("cts", "reptile", "K = 2"),
        ("cts", "reptile", "K = 4"),
    ]
    assert main(["report", str(tmp_path / "kab")]) == 0
    assert "cts − reptile at K = 4" in (tmp_path / "kab" / "report.md").read_text()


@pytest.mark.slow
def test_train_seeds_meta_train_each_algorithm_several_times(tiny_suite, tiny_config, tmp_path, capsys):
    (tmp_path / "c.toml").write_text("")
    args = ["experiment", "k-ablation", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "kab")]
    args += ["--ks", "2", "--algos", "cts,reptile", "--steps", "4", "--eval-steps", "2", "--seeds", "2"]
    args += ["--eval-batch-size", "8", "--train-seeds", "2", *sets(tiny_config(tiny_suite))]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "95 % t-interval over 1 target × 2 fine-tuning seeds × 2 meta-training runs" in printed
    result = json.loads((tmp_path / "kab" / "results.json").read_text())
    assert result["protocol"]["train_seeds"] == [0, 1] and result["request"]["train_seeds"] == 2
    for algo in ("cts", "reptile"):
        assert (tmp_path / "kab" / f"{algo}_k2_seed0").is_dir() and (
            tmp_path / "kab" / f"{algo}_k2_seed1"
        ).is_dir()
        merged = result["algorithms"][algo]["2"]
        assert merged["train_seeds"] == [0, 1] and len(merged["tasks"]["target"]["per_seed"]) == 4
    # each run is the meta-training with its seed, and the two runs of an algorithm differ
    from largemeta.phi import load_weights

    first, second = (load_weights(tmp_path / "kab" / f"cts_k2_seed{s}") for s in (0, 1))
    assert (first.config["seed"], second.config["seed"]) == (0, 1)
    assert any(not torch.equal(first.phi[k], second.phi[k]) for k in first.phi)
    assert set(result["algorithms"]["cts"]["2"]["runs"]) == {"0", "1"}
    [c] = result["comparisons"]
    assert c["n"] == 4 and c["over"] == "1 target × 2 fine-tuning seeds × 2 meta-training runs"
    assert len(result["done"]) == 4
    # run again: every part done before is skipped
    assert main(args) == 0
    assert json.loads((tmp_path / "kab" / "results.json").read_text())["comparisons"] == result["comparisons"]


@pytest.mark.slow
def test_tune_picks_beta_on_meta_training_tasks_only(tiny_suite, tiny_config, tmp_path, capsys):
    flags = sets(tiny_config(tiny_suite))
    (tmp_path / "c.toml").write_text("")
    assert (
        main(
            [
                "experiment",
                "tune",
                "--config",
                str(tmp_path / "c.toml"),
                "--out",
                str(tmp_path / "tune"),
                "--algos",
                "cts,reptile",
                "--betas",
                "0.01,1",
                "--steps",
                "4",
                "--val-steps",
                "2",
                "--val-seeds",
                "2",
                "--val-train-size",
                "16",
                "--eval-steps",
                "2",
                "--seeds",
                "2",
                "--eval-batch-size",
                "8",
                "--json",
                *flags,
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    for algo in ("cts", "reptile"):
        val = result["validation"][algo]
        assert set(val) == {"0.01", "1"} and result["best"][algo] == max(val, key=val.get)
    assert set(result["test"]) == {"cts", "reptile", "scratch"}
    assert "| cts |" in table(result)
    # compared at each one's best β, on the meta-test targets
    assert [(c["a"], c["b"], c["at"], c["n"]) for c in result["comparisons"]] == [
        ("cts", "reptile", "each one's best β", 2),
        ("cts", "scratch", "each one's best β", 2),
        ("reptile", "scratch", "each one's best β", 2),
    ]
    assert result["protocol"]["validation"]["train_size"] == 16 and result["protocol"]["betas"] == [0.01, 1.0]
    assert main(["report", str(tmp_path / "tune")]) == 0
    assert "cts − reptile at each one's best β" in (tmp_path / "tune" / "report.md").read_text()


@pytest.mark.slow
def test_pretrained_experiment(tiny_suite, tiny_config, tmp_path, capsys):
    run = tmp_path / "source"
    train_here(tiny_config(tiny_suite, steps=4), run)
    assert main(["export", str(run), "--out", str(tmp_path / "phi.safetensors")]) == 0
    flags = sets(tiny_config(tiny_suite))
    (tmp_path / "c.toml").write_text("")
    capsys.readouterr()
    assert (
        main(
            [
                "experiment",
                "pretrained",
                "--config",
                str(tmp_path / "c.toml"),
                "--init",
                str(tmp_path / "phi.safetensors"),
                "--sizes",
                "8,16",
                "--out",
                str(tmp_path / "pre"),
                "--steps",
                "4",
                "--eval-steps",
                "2",
                "--seeds",
                "2",
                "--eval-batch-size",
                "8",
                "--json",
                *flags,
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert set(result["algorithms"]) == {"finetune", "cts"} and set(result["algorithms"]["cts"]) == {
        "8",
        "16",
    }
    assert "gain of cts" in table(result) and (tmp_path / "pre" / "pretrained.png").exists()
    assert [(c["a"], c["b"], c["at"]) for c in result["comparisons"]] == [
        ("cts", "finetune", "8 images"),
        ("cts", "finetune", "16 images"),
    ]
    assert result["protocol"]["train_size"] == [8, 16]
    assert main(["report", str(tmp_path / "pre")]) == 0
    assert "cts − finetune at 16 images" in (tmp_path / "pre" / "report.md").read_text()
    # the baseline is plain fine-tuning of the given model: the protocol run on it directly gives the same
    # numbers
    from largemeta.data.tasks.suite import load_suite
    from largemeta.metatest import load_init, meta_test

    specs = list(load_suite(tiny_suite).meta_test)
    for n in (8, 16):
        direct = meta_test(
            load_init(str(tmp_path / "phi.safetensors")), specs, steps=2, seeds=2, batch_size=8, train_size=n
        )
        assert result["algorithms"]["finetune"][str(n)]["tasks"] == direct["tasks"]
    # CTS meta-trained on top of that model: its run started from it, and moved away from it
    from largemeta.phi import load_weights

    start, trained = load_weights(tmp_path / "phi.safetensors"), load_weights(tmp_path / "pre" / "cts")
    assert trained.config["init"] == str(tmp_path / "phi.safetensors") and trained.step == 4
    assert set(trained.phi) <= set(start.phi)
    assert any(not torch.equal(trained.phi[k], start.phi[k]) for k in trained.phi)
