"""The ``gpu`` suite: every test here runs on ``gpu_device.DEVICE`` (cuda unless LARGEMETA_TEST_DEVICE=cpu)
and skips when that is CUDA and this machine has none."""

from __future__ import annotations

import pytest
import torch
from gpu_device import DEVICE, ON_CUDA


@pytest.fixture(autouse=True)
def _the_test_device():
    if ON_CUDA and not torch.cuda.is_available():
        pytest.skip("needs CUDA (LARGEMETA_TEST_DEVICE=cpu runs this suite on the CPU)")
    yield


@pytest.fixture
def device() -> str:
    return DEVICE


@pytest.fixture
def run_config(tiny_suite, tiny_config, tmp_path):
    """``run_config(**overrides)``: the tiny CPU run's config on the test device, its cache in tmp_path."""
    return lambda **kw: tiny_config(tiny_suite, device=DEVICE, data_dir=str(tmp_path / "cache"), **kw)
