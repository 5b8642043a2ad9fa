"""The meta-test protocol, the experiments and the report on tiny real runs."""

import json

import pytest
import torch

from cli_runs import sets
from largemeta.cli import main
from largemeta.experiments import Common, EvalSettings, convergence, table
from largemeta.metatest import fine_tune_optimizer
from largemeta.stats import ci95, t_quantile
from largemeta.train.config import from_mapping


def lrs_used(steps):
    """The learning rate each of ``steps`` optimizer steps of the protocol's fine-tuning runs with."""
    optimizer, schedule = fine_tune_optimizer([torch.zeros(1, requires_grad=True)], steps)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return out


def test_lr_schedule_by_hand():
    # N = 10: ×0.3 from step 4 (40 %), again from 7 (70 %), again from 9 (90 %) (0-based steps)
    assert lrs_used(10) == pytest.approx([1e-3] * 4 + [3e-4] * 3 + [9e-5] * 2 + [2.7e-5])
    # N = 2: the drops at round(0.8) = 1 and round(1.4) = 1 fall together, round(1.8) = 2 never comes
    assert lrs_used(2) == pytest.approx([1e-3, 9e-5])
    # N = 1: round(0.4) = 0 drops at once
    assert lrs_used(1) == pytest.approx([3e-4])


def test_ci95_by_hand():
    # values 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.30265 → 4.30265 / √3
    assert ci95([1.0, 2.0, 3.0]) == pytest.approx(4.30265 / 3**0.5, abs=1e-5)
    assert ci95([0.7]) is None  # one value has no interval


@pytest.mark.parametrize(
    "df, t",
    [
        # two-sided 95 % quantiles from standard tables: exact at every size, not 1.96 beyond 30
        (1, 12.7062),
        (2, 4.3027),
        (3, 3.1824),
        (5, 2.5706),
        (10, 2.2281),
        (30, 2.0423),
        (31, 2.0395),
        (40, 2.0211),
        (60, 2.0003),
        (120, 1.9799),
        (1000, 1.9623),
    ],
)
def test_t_quantile_matches_tables(df, t):
    assert t_quantile(0.95, df) == pytest.approx(t, abs=1e-4)


def run_tiny(tiny_suite, tiny_config, out, **kw):
    from largemeta.train.trainer import Trainer

    trainer = Trainer(from_mapping(tiny_config(tiny_suite, **kw)), out, progress=False)
    trainer.run()
    trainer.close()
    return out


def test_evaluate_end_to_end_from_run_export_and_scratch(tiny_suite, tiny_config, tmp_path, capsys):
    run = run_tiny(tiny_suite, tiny_config, tmp_path / "run", steps=8)
    assert main(["export", str(run), "--out", str(tmp_path / "phi.safetensors")]) == 0
    capsys.readouterr()
    results = {}
    for init in (str(run), str(tmp_path / "phi.safetensors"), "scratch"):
        extra = ["--model", "convnet", "--width", "8", "--channels", "1"] if init == "scratch" else []
        assert (
            main(
                [
                    "evaluate",
                    "--init",
                    init,
                    "--suite",
                    str(tiny_suite),
                    "--steps",
                    "6",
                    "--seeds",
                    "2",
                    "--batch-size",
                    "8",
                    "--json",
                    *extra,
                ]
            )
            == 0
        )
        results[init] = json.loads(capsys.readouterr().out)
    r = results[str(run)]
    assert set(r["tasks"]) == {"target"} and len(r["tasks"]["target"]["per_seed"]) == 2
    # accuracy at every fifth of N = 6 steps: round(6·i/5) = 1, 2, 4, 5, 6
    assert list(r["tasks"]["target"]["curve"]) == ["1", "2", "4", "5", "6"]
    assert 0 <= r["mean_accuracy"] <= 1
    # the exported file is the same φ: the same numbers
    assert results[str(tmp_path / "phi.safetensors")]["tasks"] == r["tasks"]


def test_a_streamed_meta_test_gives_the_numbers_of_one_on_the_device(tiny_suite, tmp_path, capsys):
    """On a CPU a streamed target draws the batches it would draw on the device (training subsets and the
    test split alike), so the accuracies are the same; ``auto`` streams one over the budget, saying so."""
    base = ["evaluate", "--init", "scratch", "--model", "convnet", "--width", "8", "--channels", "1"]
    base += ["--suite", str(tiny_suite), "--steps", "4", "--seeds", "2", "--batch-size", "8"]
    base += ["--train-size", "40,76", "--data-dir", str(tmp_path / "cache"), "--json"]
    results = {}
    for placement, extra in (("device", []), ("stream", []), ("auto", ["--memory-budget-gb", "1e-6"])):
        assert main([*base, "--data-placement", placement, "--stream-workers", "1", *extra]) == 0
        out = capsys.readouterr()
        results[placement] = json.loads(out.out)
        assert ("streamed from disk" in out.err) == (placement == "auto"), out.err
    assert set(results["device"]["by_train_size"]) == {"40", "76"}
    assert results["stream"] == results["device"] == results["auto"]


def test_evaluate_records_protocol_and_environment_and_reports(tiny_suite, tmp_path, capsys):
    base = ["evaluate", "--init", "scratch", "--model", "convnet", "--width", "8", "--channels", "1"]
    base += ["--suite", str(tiny_suite), "--steps", "2", "--seeds", "2", "--batch-size", "8"]
    assert main([*base, "--train-size", "35,70", "--out", str(tmp_path / "sizes")]) == 0
    assert main([*base, "--out", str(tmp_path / "all")]) == 0
    for name in ("sizes", "all"):
        result = json.loads((tmp_path / name / "results.json").read_text())
        assert result["environment"]["device"] == "cpu" and result["environment"]["argv"][:2] == [
            "largemeta",
            "evaluate",
        ]
        assert result["protocol"]["fine_tuning_steps"] == 2 and result["protocol"]["targets"] == ["target"]
        assert result["protocol"]["train_size"] == ([35, 70] if name == "sizes" else None)
        capsys.readouterr()
        assert main(["report", str(tmp_path / name)]) == 0, capsys.readouterr().err  # not "holds no results"
        md = (tmp_path / name / "report.md").read_text()
        assert "Evaluation of scratch" in md and "| target |" in md and "- device: cpu" in md
        assert ("### 35 training images per target" in md) == (name == "sizes")


def test_architecture_mismatch_names_the_tensor(tiny_suite, tiny_config, tmp_path, capsys):
    run = run_tiny(tiny_suite, tiny_config, tmp_path / "run", steps=4)
    code = main(["evaluate", "--init", str(run), "--suite", str(tiny_suite), "--width", "16", "--steps", "2"])
    err = capsys.readouterr().err
    assert (
        code == 2
        and "tensor 'features.0.weight' has shape (8, 1, 3, 3), the model needs (16, 1, 3, 3)" in err
    )


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["evaluate", "--init", "scratch", "--tasks", "no_such_dataset", "--steps", "2"], "no_such_dataset"),
        (
            ["evaluate", "--init", "scratch", "--suite", "offline", "--steps", "0"],
            "--steps: '0' is out of range",
        ),
        (
            ["evaluate", "--init", "scratch", "--suite", "offline", "--seeds", "-1"],
            "--seeds: '-1' is out of range",
        ),
        (["evaluate", "--init", "/nonexistent", "--suite", "offline"], "is not 'scratch', a run folder or"),
        (["evaluate", "--init", "scratch"], "needs --suite SUITE or --tasks"),
        (
            ["evaluate", "--init", "scratch", "--suite", "offline", "--data-placement", "disk"],
            "unknown data_placement 'disk' (valid: auto, device, stream)",
        ),
        (
            ["evaluate", "--init", "scratch", "--suite", "offline", "--memory-budget-gb", "nan"],
            "memory_budget_gb out of range",
        ),
        (
            ["evaluate", "--init", "scratch", "--suite", "offline", "--stream-workers", "65"],
            "stream_workers out of range: 0..64",
        ),
    ],
)
def test_bad_input(capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(argv))
    err = capsys.readouterr().err
    assert info.value.code == 2 and needle in err and err.count("\n") == 1


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


def test_pretrained_experiment(tiny_suite, tiny_config, tmp_path, capsys):
    run = run_tiny(tiny_suite, tiny_config, tmp_path / "source", steps=4)
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
