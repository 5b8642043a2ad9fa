"""The paper's experiments: meta-test accuracy against cumulative inner steps (convergence), against the
horizon K (k-ablation), at each algorithm's best β (tune), and on top of a pretrained model.

Each kind is one module that registers an :class:`~largemeta.experiments.spec.Experiment` (its functions, by
keyword) in :data:`EXPERIMENTS`; the command line and the report iterate the registry. Each algorithm trains
once, resuming exactly from milestone to milestone; φ is evaluated with the meta-test protocol
(:mod:`largemeta.metatest`). Everything lands in ``out/results.json`` (:mod:`~largemeta.experiments.record`:
resumable, locked while written) plus one run folder per trained model (usable as ``--init``); plots and
reports read the JSON. Every module of this package but the shared ones (:data:`SHARED`) is a kind and is
imported here, so adding a kind is adding one module. Importing this package imports no torch (the command
line's start-up reads it).
"""

import importlib
import pkgutil

from largemeta.experiments.convergence import convergence
from largemeta.experiments.k_ablation import k_ablation
from largemeta.experiments.pretrained import pretrained
from largemeta.experiments.scoring import EvalSettings
from largemeta.experiments.spec import EXPERIMENTS, Common, Experiment
from largemeta.experiments.tables import cell, overall, table
from largemeta.experiments.tune import tune

__all__ = [
    "EXPERIMENTS",
    "Common",
    "EvalSettings",
    "Experiment",
    "cell",
    "convergence",
    "k_ablation",
    "overall",
    "pretrained",
    "table",
    "tune",
]

SHARED = ("drive", "figures", "glance", "parts", "reach", "record", "scoring", "spec", "tables", "verdicts")
"""The modules every kind shares; every other module of the package registers one kind."""
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in SHARED:
        importlib.import_module(f"{__name__}.{_module.name}")
