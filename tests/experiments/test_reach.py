"""Steps-to-reach, worked by hand (largemeta.experiments.reach)."""

import pytest

from largemeta.experiments.reach import crossing, sentence, steps_to_reach


def _result(by_algo: dict[str, dict[int, list[float]]]) -> dict:
    """A convergence result: one target 't', a fine-tuning seed per value, one meta-training run."""

    def scored(values):
        return {"steps": 5, "train_size": None, "tasks": {"t": {"per_seed": values}}}

    return {
        "experiment": "convergence",
        "milestones": [10, 20, 40],
        "algorithms": {
            a: {"accuracy": {str(m): scored(v) for m, v in curve.items()}} for a, curve in by_algo.items()
        },
    }


def test_crossing_by_hand():
    # 0.22 at 10, 0.36 at 20: 0.32 is reached 0.10 / 0.14 of the way, at 10 + 7.142857 steps
    assert crossing([10, 20, 40], [0.22, 0.36, 0.46], 0.32) == (pytest.approx(10 + 10 * 0.10 / 0.14), False)
    # 0.36 at 20, 0.46 at 40: 0.42 is reached 0.6 of the way, at 32 steps
    assert crossing([10, 20, 40], [0.22, 0.36, 0.46], 0.42) == (pytest.approx(32.0), False)
    assert crossing([10, 20, 40], [0.22, 0.36, 0.46], 0.52) == (None, False)
    assert crossing([10, 20, 40], [0.50, 0.36, 0.46], 0.42) == (10.0, True)  # at most the first milestone
    # the *first* crossing counts, even if the curve falls back below the level
    assert crossing([10, 20, 40], [0.2, 0.5, 0.3], 0.35) == (pytest.approx(15.0), False)


def test_steps_to_reach_of_mean_curves_and_their_interval():
    # identical units: every bootstrap resample is the same, so the interval is the point
    same = _result(
        {
            "cts": {10: [0.32, 0.32], 20: [0.42, 0.42], 40: [0.52, 0.52]},
            "reptile": {10: [0.22, 0.22], 20: [0.36, 0.36], 40: [0.46, 0.46]},
            "scratch": {10: [0.1, 0.1], 20: [0.1, 0.1], 40: [0.1, 0.1]},
        }
    )
    records = steps_to_reach(same, resamples=50)
    assert [(r["baseline"], r["milestone"]) for r in records] == [
        ("reptile", 10),
        ("reptile", 20),
        ("reptile", 40),
    ]
    r10, r20, r40 = records
    assert r10["level"] == pytest.approx(0.32) and r10["steps"] == pytest.approx(10 + 10 * 0.10 / 0.14)
    assert r10["ratio"] == pytest.approx(1 + 0.10 / 0.14) and r10["ci95"] == [pytest.approx(r10["ratio"])] * 2
    assert r20["steps"] == pytest.approx(32.0) and r20["ratio"] == pytest.approx(1.6)
    assert r40["steps"] is None and r40["ratio"] is None and r40["ci95"] == [None, None]
    assert r40["reached"] == 0.0 and r10["reached"] == 1.0 and r10["n"] == 2
    assert (
        "does not get there within the budget of 40 steps (ratio > 1.00; not reached in 100.0 % of"
        in sentence(r40, 40)
    )
    assert "needs 17 steps: 1.71× cts's" in sentence(r10, 40)


def test_the_interval_spans_the_units_and_says_when_an_end_is_not_reached():
    # cts is at 0.39 at 20 steps; reptile's unit 0 reaches it between 20 and 40 steps, unit 1 never
    result = _result(
        {
            "cts": {10: [0.30, 0.30], 20: [0.39, 0.39], 40: [0.50, 0.50]},
            "reptile": {10: [0.20, 0.20], 20: [0.30, 0.20], 40: [0.50, 0.30]},
        }
    )
    at20 = steps_to_reach(result, resamples=400)[1]
    # mean curve 0.20, 0.25, 0.40: 0.39 is reached 0.14 / 0.15 of the way from 20 to 40 steps
    assert at20["steps"] == pytest.approx(20 + 20 * 0.14 / 0.15)
    assert at20["ratio"] == pytest.approx(1 + 0.14 / 0.15)
    # a resample of unit 0 alone (0.2, 0.3, 0.5) reaches it at 20 + 20 · 0.09 / 0.2 = 29 steps (1.45×), of
    # unit 1 alone (0.2, 0.2, 0.3) never: a quarter of the resamples each
    low, high = at20["ci95"]
    assert low == pytest.approx(1.45) and high is None
    assert 0.5 < at20["reached"] < 1.0


def test_nothing_until_reference_and_baseline_are_measured_everywhere():
    partial = _result({"cts": {10: [0.3, 0.3], 20: [0.4, 0.4]}, "reptile": {10: [0.2, 0.2]}})
    assert steps_to_reach(partial) == []
