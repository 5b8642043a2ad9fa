"""A resume mid-window logs the same metrics line as an uninterrupted run: the partial sums of the window
open at the checkpoint (each task's losses since the last line) are in the checkpoint and carried on.

A real SIGTERM, delivered to this process during a real run's step, stops it between two metrics lines.
"""

import json
import os
import signal
from pathlib import Path

import pytest

from largemeta.errors import Preempted
from largemeta.train.config import from_mapping
from largemeta.train.trainer import Trainer


def _trainer_run(cfg, out, resume=False, stop_at=None):
    trainer = Trainer(from_mapping(cfg), out, resume=resume, progress=False)
    if stop_at is not None:

        def stop(controller):
            if controller.step == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)  # deferred to the step's end, as a scheduler's

        trainer.controller.on_step.append(stop)
    try:
        return trainer.run()
    finally:
        trainer.close()


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_first_line_after_a_mid_window_resume_averages_the_whole_window(
    tiny_suite, tiny_config, tmp_path
):
    cfg = tiny_config(tiny_suite, steps=12, log_every=5, checkpoint_every=1000)
    _trainer_run(cfg, tmp_path / "straight")
    run = tmp_path / "run"
    with pytest.raises(Preempted):
        _trainer_run(cfg, run, stop_at=7)  # the window of step 10 holds steps 6 and 7 at the checkpoint
    info = json.loads((run / "checkpoint.json").read_text())["info"]
    assert {name: n for name, (_, n) in info["metrics_window"].items()} == {"t0": 2, "t1": 2, "t2": 2}
    _trainer_run(cfg, run, resume=True)
    straight, resumed = _lines(tmp_path / "straight"), _lines(run)
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == [5, 10, 12]
    for a, b in zip(straight, resumed, strict=True):
        assert a["mean_loss"] == b["mean_loss"], (a["step"], a["mean_loss"], b["mean_loss"])
        assert {k: v["loss"] for k, v in a["tasks"].items()} == {k: v["loss"] for k, v in b["tasks"].items()}
