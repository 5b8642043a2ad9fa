"""Paired comparisons and their intervals (checked against values worked out by hand), and the report of
every kind of results folder (its Markdown and HTML, without a browser)."""

import json

import fake_results
import pytest

from largemeta.experiments.drive import merge_runs, store
from largemeta.experiments.tables import table
from largemeta.experiments.verdicts import compare, comparisons, verdict, verdicts
from largemeta.report import write_report
from largemeta.stats import ci95, paired, t_quantile


def test_paired_interval_by_hand():
    # differences 1, 2, 3, 4: mean 2.5, sd √(5/3) = 1.2910, se 0.6455, t(0.975, 3) = 3.182446
    # → 2.5 ∓ 3.182446 · 0.6455 = [0.4457, 4.5543]
    got = paired([2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0, 4.0])
    assert got["n"] == 4 and got["mean_diff"] == pytest.approx(2.5)
    assert got["ci95"] == pytest.approx([0.4457, 4.5543], abs=1e-4)
    # differences 0.5, -0.5: mean 0, sd 0.7071, se 0.5, t(0.975, 1) = 12.7062 → [-6.3531, 6.3531]
    assert paired([1.0, 0.0], [0.5, 0.5])["ci95"] == pytest.approx([-6.3531, 6.3531], abs=1e-4)
    assert paired([0.7], [0.5]) == {"mean_diff": pytest.approx(0.2), "ci95": None, "n": 1}
    with pytest.raises(ValueError, match="differ in length"):
        paired([1.0], [1.0, 2.0])


def test_t_quantile_and_ci95_keep_their_api():
    assert t_quantile(0.95, 3) == pytest.approx(3.182446, abs=1e-6)
    assert t_quantile(0.90, 10) == pytest.approx(1.812461, abs=1e-6)
    assert ci95([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2.0543, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile(0.95, 0)


def one_target(per_seed, steps=10, train_size=None):
    return {
        "steps": steps,
        "seeds": len(per_seed),
        "train_size": train_size,
        "tasks": {
            "t": {
                "mean_accuracy": sum(per_seed) / len(per_seed),
                "ci95": 0.0,
                "per_seed": per_seed,
                "curve": {"10": 0.0},
            }
        },
        "mean_accuracy": sum(per_seed) / len(per_seed),
    }


def test_compare_pairs_target_and_seed():
    c = compare("cts", one_target([0.4, 0.5, 0.6, 0.7]), "reptile", one_target([0.3] * 4), "10 steps")
    assert (c["a"], c["b"], c["at"], c["n"], c["unit"]) == ("cts", "reptile", "10 steps", 4, "fraction")
    assert c["mean_diff"] == pytest.approx(0.25)
    assert c["ci95"] == pytest.approx([0.04457, 0.45543], abs=1e-5)
    assert c["over"] == "1 target × 4 fine-tuning seeds of 1 meta-training run"
    assert verdict(c) == "cts − reptile at 10 steps: +25.0 points, 95 % CI [4.5, 45.5], 4 pairs: cts higher"
    # an end that rounds to 0.0 while it is not 0 keeps a second decimal: the verdict's sign stays readable
    near = {**c, "mean_diff": 0.012, "ci95": [0.0004, 0.0236]}
    assert verdict(near).endswith("+1.2 points, 95 % CI [0.04, 2.4], 4 pairs: cts higher")
    same = compare("a", one_target([0.4, 0.5]), "b", one_target([0.5, 0.4]), "x")
    assert verdict(same).endswith(": no significant difference")
    # a result scored with another protocol does not pair
    with pytest.raises(ValueError, match="not paired"):
        compare("a", one_target([0.4]), "b", one_target([0.4], steps=20), "x")


def test_meta_training_runs_pair_by_seed_and_a_baseline_pairs_with_every_run():
    slot: dict = {}
    store(slot, "10", 0, 2, one_target([0.4, 0.5]))
    store(slot, "10", 1, 2, one_target([0.6, 0.7]))
    merged = slot["10"]
    assert merged["train_seeds"] == [0, 1] and merged["tasks"]["t"]["per_seed"] == [0.4, 0.5, 0.6, 0.7]
    assert merged["mean_accuracy"] == pytest.approx(0.55) and set(merged["runs"]) == {"0", "1"}
    # against scratch (not meta-trained): (run, target, seed) pairs, scratch's value repeated per run
    c = compare("cts", merged, "scratch", one_target([0.3, 0.3]), "10 steps")
    assert c["n"] == 4 and c["ci95"] == pytest.approx([0.04457, 0.45543], abs=1e-5)
    assert c["over"] == "1 target × 2 fine-tuning seeds × 2 meta-training runs"
    # two meta-trained algorithms pair run by run
    other = merge_runs({"0": one_target([0.4, 0.4]), "1": one_target([0.5, 0.5])})
    c = compare("cts", merged, "reptile", other, "10 steps")
    assert c["n"] == 4 and c["mean_diff"] == pytest.approx((0.0 + 0.1 + 0.1 + 0.2) / 4)
    # one run each: stored as is (the results of a single run are unchanged)
    single: dict = {}
    store(single, "10", 0, 1, one_target([0.4]))
    assert single["10"] == one_target([0.4])


def test_every_two_algorithms_at_every_milestone(tmp_path):
    folder = fake_results.convergence(tmp_path / "c")
    result = json.loads((folder / "results.json").read_text())
    found = comparisons(result)
    pairs = [(c["a"], c["b"]) for c in found if c["at"] == "10 steps"]
    assert pairs == [
        ("cts", "reptile"),
        ("cts", "leap"),
        ("cts", "scratch"),
        ("reptile", "leap"),
        ("reptile", "scratch"),
        ("leap", "scratch"),
    ]
    assert len(found) == 12 and {c["n"] for c in found} == {6}  # 3 targets × 2 seeds
    cts_reptile = found[6]
    assert cts_reptile["mean_diff"] == pytest.approx(0.05) and cts_reptile["at"] == "10 steps"
    text = table(result)
    assert "95 % t-interval over 3 targets × 2 fine-tuning seeds of 1 meta-training run" in text
    assert "- cts − reptile at 10 steps: +5.0 points, 95 % CI [5.0, 5.0], 6 pairs: cts higher" in text
    assert verdicts({**result, "comparisons": []}) == []


@pytest.mark.parametrize("kind", list(fake_results.KINDS))
def test_the_report_of_each_kind(tmp_path, kind):
    folder = fake_results.KINDS[kind](tmp_path / kind)
    md_path, html_path = write_report(folder)
    md, page = md_path.read_text(), html_path.read_text()
    # protocol and environment are the ones the results file records, not this machine's
    assert "### Protocol" in md and "fine_tuning_steps: 10" in md
    assert "### Environment" in md and "device: recorded-device-xyz" in md
    assert "0123456789abcdef0123456789abcdef01234567" in page and "<h3>Environment</h3>" in page
    if kind.startswith("evaluate"):
        assert "holds no results.json" not in md and "| t1 |" in md
        if kind == "evaluate-sizes":
            assert "### 35 training images per target" in md and "### 70 training images per target" in md
        return
    assert "### Paired comparisons" in md and "<li>" in page and "95 % CI [" in page
    assert "### Per target" in md and "| t3 |" in md
    expected = {
        "convergence": ("cts − reptile at 10 steps: +5.0 points", 2),
        "demo": ("leap − scratch at 5 steps: +9.0 points", 2),
        "k-ablation": ("cts − reptile at K = 4: +5.0 points", 1),
        "tune": ("cts − reptile at each one's best β: +3.0 points", 0),
        "pretrained": ("cts − finetune at 16 images: +1.0 points", 1),
    }[kind]
    assert expected[0] in md
    assert page.count("<figcaption>") == expected[1] and md.count("![") == expected[1]
    if expected[1]:
        assert "t-interval over" in page.split("<figcaption>", 1)[1].split("</figcaption>", 1)[0]
    if kind in ("convergence", "demo"):
        assert (
            "### Meta-updates" in md and "| cts | 5: 5, 10: 10 |" in md and "| reptile | 5: 1, 10: 2 |" in md
        )
        assert ("Demo: Convergence" in md) == (kind == "demo")


def test_an_older_results_file_says_not_recorded(tmp_path):
    folder = fake_results.convergence(tmp_path / "old", recorded=False)
    md = write_report(folder)[0].read_text()
    assert md.count("not recorded") == 2 and "cts − reptile at 10 steps" in md  # verdicts worked out
