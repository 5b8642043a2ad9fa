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

# φ hashes by the CPU that computed them. Pinned kernels still round differently on different x86-64
# parts (MKL and oneDNN pick code paths by CPU model), so one table cannot hold for every machine. The first
# table was recorded with version 0.1 itself; the second with 74aaf3f (whose φ equals version 0.1's on the
# first CPU) on an AVX-512 Xeon, where the v0.1 fixture's first six steps, computed on the first CPU, make the
# resumed run differ from a straight one. A run must match one table in full: a change to the arithmetic
# matches neither by chance.
GOLDEN_BY_CPU = {
    "version 0.1's machine": {
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
    },
    "AVX-512 Xeon (from 74aaf3f)": {
        "cts": "e9fc1deda937c6688ce844d3f14c8e8652de0dd922d74a9c8220313ae1e76003",
        "cts-reptile": "e9fc1deda937c6688ce844d3f14c8e8652de0dd922d74a9c8220313ae1e76003",
        "reptile": "6ad4425ca61ec22700a7ad4d0a9cfd63ca77d9806d14c862bfb1d9d0a6e35425",
        "cts-fomaml": "28725d894593821e6e40ba4435989ae4f0cbc5a65134bbac0a7d533376e2a08e",
        "fomaml": "96c73dbf718e569b681fb17161aed0c52399168a5d45a7eb9dba59893b666f39",
        "cts-leap": "bacdeedb47f08837d784ed2cb108d9b42b8bccec6f2bd03a5df4c19d60fc3760",
        "leap": "342e53adb97e249fcf951f97de3a05283cb2b92312e46fbb663b8e43df389f86",
        "imaml": "8fa37a957b4bba32e3a02e428624761e7567ddf1dbdd6cf18a479a1481a39018",
        "multitask": "050ec38bc33885805cc6467602de0513b0cc96d1703a624779a9c66fb7f494c0",
        "single": "a52fd30f8f1867c899e4d0b7470997d6e8d10dc00a18388f68b42b0cc79a2a39",
        "cts/channels_last": "2eb77646c0ac216f79a10ed0027f18f4d21514cd3962b6e3fc06fe635976d614",
        "cts/autocast": "c1e89b5f405bd00695506e9bd6e92ade3247f1cb133f9218f72927e58d24709e",
        "cts/channels_last+autocast": "566bf2e59cfa3fe676c1d8a03e861cf68152e50793de2ff80ccc32d8cc85e739",
        "cts/batched": "e49fa25cce8b7d63b4ffc4b934f53a2daa81b6daa316ba9535c05d100cbe9fad",
        "cts/reset_inner_state": "119228c642291cf5322f6004b3c59d535edb0f3fe4caea66f4b1ba365b39fb90",
        "cts/meta_every=2": "56cadee7d97660c111ab1a33cf4e395d641546efcb580d338268f9ee187f3bc4",
        "cts/adam-inside-and-outside": "5a3f1f745c51eaef664f3729504fdf31b6df730088e9f9ddeb34c8235cd9b893",
        "cts/shift-error-probe": "e9fc1deda937c6688ce844d3f14c8e8652de0dd922d74a9c8220313ae1e76003",
        "reptile/resnet20": "07972a6a5b38f614df6fc3f2c5ad428c1e3c5ef04b2796ccf0e671923231e5f7",
        "drop-in": "f66e9c8f4bdadfaf144687d137c5dfdcfa0de48a5a8c111b80a6072e674c1fdc",
        "fixture/straight-12": "340e73c1681045dcbd78bf10457a17b48ab1cd61aa6897a73376d0792fdfac92",
        "fixture/resumed-6-to-12": "af3344c2e53eb999d4623a98cead0dfd2ac03f214ffc13fc0611b5a7c42d95ea",
    },
}


def _has_avx2() -> bool:
    try:
        return platform.machine() in ("x86_64", "AMD64") and " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.network
@pytest.mark.slow
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
    changed = {
        cpu: sorted(case for case in table if got.get(case) != table[case])
        for cpu, table in GOLDEN_BY_CPU.items()
    }
    assert min(map(len, changed.values())) == 0, f"φ matches no recorded CPU; cases that differ: {changed}"
    # What holds on every CPU: CTS with K=1 is Reptile's shift, and the shift-error probe only observes.
    assert got["cts"] == got["cts-reptile"] == got["cts/shift-error-probe"]
