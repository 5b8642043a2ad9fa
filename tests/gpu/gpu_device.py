"""Where the ``gpu`` suite runs, and what its tests share.

The suite runs on ``cuda`` (skipped where CUDA is absent). ``LARGEMETA_TEST_DEVICE=cpu`` runs the same tests
on the CPU, so their logic is exercised on any machine; the tests that only mean something on a GPU (CUDA
graphs, pinned memory) are marked :data:`needs_cuda` and skip there. ``LARGEMETA_TEST_RECORD_DIR``, when set,
receives a JSON file per measurement a test records (how far a resumed run is from a straight one, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

VALID = ("cuda", "cpu")
DEVICE = os.environ.get("LARGEMETA_TEST_DEVICE", "cuda")
if DEVICE not in VALID:
    raise pytest.UsageError(f"LARGEMETA_TEST_DEVICE is {DEVICE!r}; valid: {', '.join(VALID)}")
ON_CUDA = DEVICE == "cuda"
RESOLVED = "cuda:0" if ON_CUDA else "cpu"
"""The device as commands record it once resolved (``cuda`` is LOCAL_RANK's GPU: 0 outside torchrun)."""

needs_cuda = pytest.mark.skipif(
    not (ON_CUDA and torch.cuda.is_available()), reason="CUDA only (CUDA graphs, pinned memory)"
)


def record(name: str, data: dict) -> None:
    """Write ``data`` as ``NAME.json`` under ``LARGEMETA_TEST_RECORD_DIR`` (nothing when it is unset)."""
    folder = os.environ.get("LARGEMETA_TEST_RECORD_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        payload = {"device": RESOLVED, **data}
        if ON_CUDA and torch.cuda.is_available():
            payload["gpu"] = torch.cuda.get_device_name()
        (Path(folder) / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_resume_matches(
    straight: dict, again: dict, resumed: dict, name: str, tol: float = 1e-4
) -> dict[str, float]:
    """What the suite asserts of ``--resume``: a resumed run is bit-exact with a straight one whenever the
    device repeats itself (two straight runs bit-equal: always on the CPU); where it does not (cuDNN's
    non-deterministic kernels), the resumed run may differ from the straight one by no more than the
    device's own run-to-run difference, ×10 (or 1e-6, where that is larger), and never more than ``tol``.
    The differences are recorded (``NAME.json``)."""
    repeat, resume = max_abs_diff(straight, again), max_abs_diff(straight, resumed)
    figures = {"straight_vs_straight_max_abs": repeat, "straight_vs_resumed_max_abs": resume}
    record(name, {**figures, "bit_exact": resume == 0.0, "device_repeats_itself": repeat == 0.0})
    if repeat == 0.0:
        assert resume == 0.0, f"the device repeats itself bit for bit, but resuming moved φ by {resume:g}"
    else:
        assert resume <= min(tol, max(10 * repeat, 1e-6)), figures
    return figures
