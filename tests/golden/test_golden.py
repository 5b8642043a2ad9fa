"""The redesign invariant: φ is bit-identical to what version 0.1 produced, and a v0.1 run folder still
resumes.

The hashes below were recorded with version 0.1, before the layers above the core were redesigned
(``golden_runs.py`` says what each case runs). A change of any of them means results changed, which a
refactoring must never do. ``run_v0_1/`` is a run folder written by version 0.1 at step 6 of 12: resumed by
today's code it must reach the φ of version 0.1's uninterrupted run, and evaluate.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
# What decides float rounding on a CPU, pinned: one thread and AVX2 kernels (AVX-512 ones round differently).
PINNED = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}

GOLDEN = {
    "cts": "5f7bcc6316ecc477cc56a538a5592b3b83de9346a5d7bf90f11ec7ca76e5048e",
    "cts-reptile": "5f7bcc6316ecc477cc56a538a5592b3b83de9346a5d7bf90f11ec7ca76e5048e",
    "reptile": "7e02698fdbd04842caf148f96c1a904d4b08a506456afc24a5076d49bd60a298",
    "cts-fomaml": "0f1a446eadb739991fd1b405d1fb2f79b771f5148095961beee28969e0ac5730",
    "fomaml": "25e23060b706235707fd8b952b884fe51528f662fc0c0ab860316f7cc1e2c506",
    "cts-leap": "d5db7a68a0d16276315244876f0000a67bea6b1d29ebe246ab0c29b286a474b3",
    "leap": "ab6043b21ade0c6cb6a1adc7736f2ca081d096027b43c93295606fc233a77ff5",
    "imaml": "71d390f4777c52e7bb0427eec74446b0b946a91a07ca5e1e9cbf98184a53f7a9",
    "multitask": "7d99fa72851f76547787278b671cf8d0354f5739938f361fa55f676cf62d1a96",
    "single": "a8db29b3300fb6552c4011816ae9fa913bc12ef3f4c35c92eebade1b2e4c884e",
    "cts/channels_last": "20ee26b4bbfa733dfe5108dfb6871db0551678ecfc68ff1d8dee9839021dcf51",
    "cts/autocast": "c1e89b5f405bd00695506e9bd6e92ade3247f1cb133f9218f72927e58d24709e",
    "cts/channels_last+autocast": "566bf2e59cfa3fe676c1d8a03e861cf68152e50793de2ff80ccc32d8cc85e739",
    "cts/batched": "a618771e3adf6099b708e7741ff7c4196843be5c6c372e9aa122c122d59e8e55",
    "cts/reset_inner_state": "b17829e359905e85dec48339936b7b8ed1c8cad1a4e0fca47155887ae0ecf910",
    "cts/meta_every=2": "2184c761a424729f26f0fa201468a2137dc4455b23b3096a44dde0f4e9bc7292",
    "cts/adam-inside-and-outside": "a73252fdcd5c1bc60a2ee8121fb424ea285cb5b7d3c167febd3c65ab1306c9e9",
    "cts/shift-error-probe": "5f7bcc6316ecc477cc56a538a5592b3b83de9346a5d7bf90f11ec7ca76e5048e",
    "reptile/resnet20": "9978df7ca4fecb0136972017fd67c5534a7435438e831ee9a67ffc7160cfc24b",
    "drop-in": "a416ee77c3101102001923dbd265f9252bbe38d73fc35c98de47beb24bde9273",
    "fixture/straight-12": "d4de47ff82b3c26a55eeb6f2a83fef690218fc8532bc1dc5908e3e382bd24b5a",
    "fixture/resumed-6-to-12": "d4de47ff82b3c26a55eeb6f2a83fef690218fc8532bc1dc5908e3e382bd24b5a",
}


def _has_avx2() -> bool:
    try:
        return platform.machine() in ("x86_64", "AMD64") and " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _has_avx2(), reason="the hashes were recorded with AVX2 kernels on x86-64")
def test_phi_is_bit_identical_to_version_0_1_and_a_v0_1_run_folder_resumes(tmp_path):
    run = tmp_path / "run_v0_1"
    shutil.copytree(HERE / "run_v0_1", run)
    proc = subprocess.run(
        [sys.executable, str(HERE / "golden_runs.py"), str(run)],
        capture_output=True,
        text=True,
        env={**os.environ, **PINNED},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    changed = {case: got.get(case) for case in GOLDEN if got.get(case) != GOLDEN[case]}
    assert not changed, f"φ changed for {sorted(changed)}"
