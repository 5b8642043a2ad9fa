"""Runs of the command line for the ``gpu`` suite, in this process (``largemeta.cli.main``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from checkpoint_edits import phi, read_all  # noqa: F401  (phi: for the gpu tests)
from cli_runs import sets
from largemeta.cli import main


def train(cfg: dict, out: Path, *extra: str, resume: bool = False) -> None:
    """``largemeta train`` of ``cfg`` into ``out`` (or ``--resume out``); exit 0 asserted."""
    where = ["--resume", str(out)] if resume else ["--out", str(out), *sets(cfg)]
    code = main(["train", "-q", *where, "--steps", str(cfg["steps"]), *extra])
    assert code == 0, f"train exited {code}"


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def assert_trained(run: Path, cfg: dict, device: str) -> list[dict]:
    """What every finished run on the device must show: its config records the device, every logged step is
    there with a finite loss, and φ in the checkpoint is finite."""
    config = json.loads((Path(run) / "config.json").read_text())
    assert config["device"] == device, config["device"]
    lines = metrics(run)
    every = cfg["log_every"]
    assert [m["step"] for m in lines] == list(range(every, cfg["steps"] + 1, every))
    assert all(isinstance(m["mean_loss"], float) and math.isfinite(m["mean_loss"]) for m in lines), lines
    weights = phi(run)
    assert weights and all(v.isfinite().all() for v in weights.values())
    assert read_all(Path(run))["step"] == cfg["steps"]
    return lines
