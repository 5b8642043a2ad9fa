"""Memory does not grow with the horizon K: nothing keeps an autograd graph across inner steps.

Measured, not assumed: in a fresh process whose allocator returns large blocks to the system at once
(``MALLOC_MMAP_THRESHOLD_``), resident memory is sampled after every inner step while a 262k-parameter
problem runs K = 10 and K = 1000 steps. A graph kept per step would add ≥ 1 MiB a step (≥ 1 GiB at K = 1000).
"""

import json
import os
import subprocess
import sys

import pytest

import largemeta

PROBE = r"""
import json, os, sys
import torch
from largemeta.core import ALGORITHMS, SGD, MetaLearner

torch.set_num_threads(1)
PAGE = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE

class Regression:
    def __init__(self, n=512):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(32, n, generator=g), torch.randn(32, n, generator=g)
    def train_loss(self, p):
        return ((self.x @ p["w"]).tanh() - self.y).pow(2).mean()
    query_loss = train_loss

def growth(name, k):
    mg, schedule = ALGORITHMS.get(name).build(k)
    learner = MetaLearner({"w": torch.zeros(512, 512)}, [Regression(), Regression()], SGD(0.01, momentum=0.9),
                          mg, schedule)
    start, peak = rss(), [0]
    learner.controller.on_step.append(lambda _: peak.append(rss() - start))
    learner.run(k)
    return max(peak)

name = sys.argv[1]
growth(name, 10)
print(json.dumps({"short": growth(name, 10), "long": growth(name, 1000)}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read resident memory")
@pytest.mark.parametrize("name", ["cts", "reptile", "fomaml", "cts-leap", "imaml"])
def test_memory_flat_in_k(name):
    src = os.path.dirname(os.path.dirname(largemeta.__file__))
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE, name], env=env, capture_output=True, text=True, check=True
    )
    figures = json.loads(out.stdout)
    mib = {k: v / 2**20 for k, v in figures.items()}
    assert figures["long"] <= figures["short"] + 16 * 2**20, f"resident growth K=1000 vs K=10: {mib}"
