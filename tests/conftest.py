"""Shared fixtures. Tiny real runs: a suite of 3 tasks over .npz datasets written in the test, a width-8
ConvNet."""

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def write_suite(root: Path, n_tasks: int = 3, classes: int = 4, per_class: int = 24, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    lines = [
        'name = "tiny"',
        "[defaults]",
        f"image_size = {size}",
        "channels = 1",
        "crop_padding = 2",
        "flip = false",
    ]
    for t in range(n_tasks):
        # class c: a bright square at a class-specific place, plus noise — learnable in a few steps
        x = rng.integers(0, 60, size=(classes * per_class, size, size), dtype=np.uint8)
        y = np.repeat(np.arange(classes), per_class)
        for i, c in enumerate(y):
            r, col = divmod((c + t) % classes, 2)
            x[i, r * 6 : r * 6 + 5, col * 6 : col * 6 + 5] = 220
        path = root / f"task{t}.npz"
        np.savez(path, x=x, y=y)
        lines += ["[[meta_train]]", f'name = "t{t}"', f'dataset = "{path}"']
    lines += ["[[meta_test]]", 'name = "target"', f'dataset = "{root / "task0.npz"}"']
    suite = root / "tiny.toml"
    suite.write_text("\n".join(lines) + "\n")
    return suite


@pytest.fixture
def tiny_suite(tmp_path) -> Path:
    return write_suite(tmp_path)


@pytest.fixture
def make_suite(tmp_path):
    """``make_suite(n_tasks=3, classes=4, per_class=24, size=16)``: a suite like ``tiny_suite``, sized."""
    return lambda **sizes: write_suite(tmp_path, **sizes)


def _tiny_config(suite: Path, **overrides) -> dict:
    cfg = {
        "suite": str(suite),
        "model": "convnet",
        "width": 8,
        "batch_size": 8,
        "steps": 12,
        "k": 4,
        "log_every": 4,
        "checkpoint_every": 6,
        "device": "cpu",
        "inner_lr": 0.05,
        "meta_lr": 0.1,
        "eval_batches": 1,
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture
def two_task_suite(tmp_path) -> Path:
    """The tiny suite with 2 tasks (4 ranks serve each in groups of 2)."""
    folder = tmp_path / "two-task-suite"
    folder.mkdir()
    return write_suite(folder, n_tasks=2)


@pytest.fixture
def tiny_config():
    """``tiny_config(suite, **overrides)``: the config dict of a seconds-long CPU run."""
    return _tiny_config
