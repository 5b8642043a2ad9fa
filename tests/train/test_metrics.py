"""What metrics.jsonl says: held-out accuracy of θ before the step's restart (no sawtooth at multiples of K),
φ's accuracy as its own field, and the number of meta-updates."""

import json

from largemeta.train.config import from_mapping
from largemeta.train.trainer import Trainer


def logged(cfg, out):
    trainer = Trainer(from_mapping(cfg), out, progress=False)
    try:
        trainer.run()
    finally:
        trainer.close()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def mean_accuracy(record, key="accuracy"):
    return sum(t[key] for t in record["tasks"].values()) / len(record["tasks"])


def test_cts_accuracy_rises_within_each_trajectory_and_stays_up_at_restarts(
    tiny_suite, tiny_config, tmp_path
):
    # 4 classes: chance is 0.25; the tiny tasks are learnt within a trajectory of 6 inner steps
    cfg = tiny_config(tiny_suite, algo="cts", steps=24, k=6, log_every=2, eval_batches=4)
    records = logged(cfg, tmp_path / "run")
    assert [r["step"] for r in records] == list(range(2, 25, 2))
    for end in (6, 12, 18, 24):  # a trajectory: steps end-4, end-2, end (its restart)
        first, last = (next(r for r in records if r["step"] == s) for s in (end - 4, end))
        assert mean_accuracy(last) >= mean_accuracy(first)
        assert mean_accuracy(last) > 0.5  # θ before the restart, not φ at chance
        assert all("phi_accuracy" in t and "held_out_loss" in t for t in last["tasks"].values())
        # φ's own accuracy (each task's head on φ) is the separate field, and θ's is above it
        assert mean_accuracy(last) > mean_accuracy(last, "phi_accuracy")
    assert not any("phi_accuracy" in t for r in records if r["step"] % 6 for t in r["tasks"].values())
    assert [r["meta_updates"] for r in records] == [r["step"] for r in records]  # CTS: every step
    assert [r["shifts"] for r in records] == [r["step"] for r in records]


def test_plain_algorithms_count_one_meta_update_per_trajectory(tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite, algo="reptile", steps=12, k=4, log_every=2)
    records = logged(cfg, tmp_path / "run")
    assert [r["meta_updates"] for r in records] == [0, 1, 1, 2, 2, 3]
    assert all(r["shifts"] == 0 for r in records)
