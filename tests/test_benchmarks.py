"""Every benchmark script still runs and prints its JSON, at the smallest sizes its flags allow (about 40 s in
all; the figures themselves are not checked: benchmarks are run on demand). A benchmark that breaks silently
stops the next person who needs its numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runs import env

ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "scaling_model": [],
    "index_folder": ["--files", "200", "--classes", "4"],
    "data_sampling": ["--rounds", "2", "--batch", "16"],
    "meta_step": ["--repeats", "1", "--block", "1", "--warmup", "2", "--threads", "1", "--memory-ks", "2,4"],
    "stream_vs_device": ["--steps", "2", "--block", "1", "--workers", "1"],
    "pool_step": ["--k", "2", "--trajectories", "2"],
    "paper_science": ["--out", "science", "--tiny", "--device", "cpu", "--algos", "cts", "--eval-steps", "0"],
    "metatest_batched": [
        "--targets", "1", "--classes", "3", "--seeds", "2", "--steps", "2", "--train-size", "12",
        "--batch", "4", "--width", "8", "--threads", "1",
    ],
    "stream_memory": ["--sizes-gb", "0.002", "--image-size", "32", "--classes", "4", "--steps", "2"],
    "distributed": [
        "--skip", "checkpoint_memory,allreduce", "--width", "8", "--checkpoint-width", "8", "--batch", "8",
        "--steps", "2", "--warmup", "1", "--repeats", "1",
    ],
}  # fmt: skip


# data_sampling times fetching every offline-suite dataset into an empty folder (the registries, every run);
# pool_step and stream_vs_device train on the shipped configs' registry datasets; distributed starts its ranks
# with torchrun; meta_step is the longest of the others
TIER = {
    "data_sampling": pytest.mark.network,
    "pool_step": pytest.mark.network,
    "stream_vs_device": pytest.mark.network,
    "distributed": pytest.mark.distributed,
    "meta_step": pytest.mark.slow,
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=TIER.get(name, ())) for name in sorted(SMALL)])
def test_the_benchmark_runs_and_prints_json(name, tmp_path):
    script = ROOT / "benchmarks" / f"{name}.py"
    out = subprocess.run(
        [sys.executable, str(script), *SMALL[name]],
        env=env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert isinstance(json.loads(out.stdout), dict)


def test_every_benchmark_script_is_smoke_tested():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    assert scripts == set(SMALL)
