"""The meta-test protocol (largemeta.metatest) and ``largemeta evaluate`` on tiny real runs: the fine-tuning
schedule and intervals by hand, evaluate from a run, an export and scratch, streamed or on the device, what
it records, and its refusals."""

import json

import pytest
import torch

from cli_runs import train_here
from largemeta.cli import main
from largemeta.metatest import fine_tune_optimizer
from largemeta.stats import ci95, t_quantile


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


def test_evaluate_end_to_end_from_run_export_and_scratch(tiny_suite, tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    train_here(tiny_config(tiny_suite, steps=8), run)
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
    run = tmp_path / "run"
    train_here(tiny_config(tiny_suite, steps=4), run)
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
