"""A corpus of corrupt or hostile inputs through the real command line.

Every case: exit code 2, exactly one line on stderr (no traceback), and every file saved before — a finished
run folder and the dataset cache — byte for byte unchanged (sha256 before and after).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import largemeta
from cli_runs import tree

SRC = str(Path(largemeta.__file__).resolve().parents[1])


def corpus(tmp: Path) -> dict[str, list[str]]:
    def npz(name, **arrays):
        path = tmp / f"{name}.npz"
        np.savez(path, **arrays)
        return str(path)

    x = np.zeros((8, 6, 6), np.uint8)
    y = np.arange(8) % 2
    folder = tmp / "folder"
    for cls in ("a", "b", "c"):
        (folder / cls).mkdir(parents=True, exist_ok=True)
    from PIL import Image

    for cls in ("a", "b"):
        for i in range(3):
            Image.new("L", (6, 6), color=i * 40).save(folder / cls / f"{i}.png")
    (folder / "a" / "notes.png").write_text("this is not an image")
    truncated = tmp / "truncated"
    for cls in ("a", "b"):
        (truncated / cls).mkdir(parents=True, exist_ok=True)
        Image.new("L", (6, 6)).save(truncated / cls / "0.png")
    data = (truncated / "b" / "0.png").read_bytes()
    (truncated / "b" / "0.png").write_bytes(data[: len(data) // 2])
    empty = tmp / "emptyclass"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    Image.new("L", (6, 6)).save(empty / "a" / "0.png")
    bad_toml = tmp / "bad.toml"
    bad_toml.write_text("k = [unclosed\n")
    return {
        "npz wrong dtype": ["data", "info", npz("f32", x=x.astype(np.float32), y=y)],
        "npz wrong rank": ["data", "info", npz("rank", x=np.zeros((8, 6), np.uint8), y=y)],
        "npz NaN labels": ["data", "info", npz("nan", x=x, y=np.full(8, np.nan))],
        "npz labels out of range": ["data", "info", npz("range", x=x, y=y - 5)],
        "npz missing keys": ["data", "info", npz("keys", images=x)],
        "folder with a non-image": ["data", "info", str(folder)],
        "truncated PNG": ["data", "info", str(truncated)],
        "empty class folder": ["data", "info", str(empty)],
        "config wrong type": ["train", "--out", str(tmp / "new"), "--set", "k=ten"],
        "config unknown key": ["train", "--out", str(tmp / "new"), "--set", "learning_rate=0.1"],
        "config absurd K": ["train", "--out", str(tmp / "new"), "--set", f"k={10**12}"],
        "config negative batch": ["train", "--out", str(tmp / "new"), "--set", "batch_size=-8"],
        "config not TOML": ["train", "--out", str(tmp / "new"), "--config", str(bad_toml)],
        "missing --out": ["train", "--steps", "5"],
        "contradictory resume/out": ["train", "--resume", str(tmp / "a"), "--out", str(tmp / "b")],
        "unknown algorithm": ["train", "--out", str(tmp / "new"), "--algo", "maml"],
        "evaluate steps 0": ["evaluate", "--init", "scratch", "--suite", "offline", "--steps", "0"],
        "export to a non-safetensors name": ["export", str(tmp), "--out", str(tmp / "phi.bin")],
        "unknown subcommand": ["synthetic", "wobble"],
        "synthetic K < 1": ["synthetic", "compare", "--k", "0", "--inner", "sgd"],
    }


@pytest.mark.slow
def test_corrupt_and_hostile_inputs(tmp_path, tiny_suite, tiny_config):
    # what is "saved before": a finished run and a data cache with a converted dataset
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "PYTHONPATH": SRC,
        "OMP_NUM_THREADS": "1",
        "LARGEMETA_DATA_DIR": str(cache),
        "LARGEMETA_OFFLINE": "1",
    }
    run = tmp_path / "run"
    sets = [a for k, v in tiny_config(tiny_suite, steps=2).items() for a in ("--set", f"{k}={v}")]
    ok = subprocess.run(
        [sys.executable, "-m", "largemeta", "train", "--out", str(run), *sets],
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    np.savez(tmp_path / "good.npz", x=np.zeros((8, 6, 6), np.uint8), y=np.arange(8) % 2)
    assert (
        subprocess.run(
            [sys.executable, "-m", "largemeta", "data", "info", str(tmp_path / "good.npz")],
            env=env,
            capture_output=True,
        ).returncode
        == 0
    )
    before = {"run": tree(run), "cache": tree(cache) if cache.exists() else {}}
    failures = []
    for name, argv in corpus(tmp_path / "inputs").items():
        out = subprocess.run(
            [sys.executable, "-m", "largemeta", *argv], env=env, capture_output=True, text=True, timeout=120
        )
        lines = out.stderr.strip().splitlines()
        if out.returncode != 2 or len(lines) != 1 or "Traceback" in out.stderr:
            failures.append(f"{name}: exit {out.returncode}, stderr {out.stderr[-400:]!r}")
    after = {"run": tree(run), "cache": tree(cache) if cache.exists() else {}}
    assert not failures, "\n".join(failures)
    assert after == before
