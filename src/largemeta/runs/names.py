"""The names of what a run folder and a results folder hold.

A run folder (``largemeta train --out RUN``) holds::

    checkpoint.json   the latest checkpoint's manifest (format largemeta-sharded-checkpoint-v2), naming its
                      folder checkpoint-NNNNNNNN/ (one file per rank that wrote it); with the resolved config
                      and the run's identity it is the source of truth for --resume
    checkpoint.pt     the single-file checkpoint of a run written by version 0.1 (format
                      largemeta-checkpoint-v1; read, and superseded by the first checkpoint after a resume)
    config.json       the resolved config (a human-readable copy; --resume warns when it was edited and
                      rewrites it from the checkpoint's)
    run.json          the run's identity {run_id, algo, seed, created} (a copy; it tells a foreign checkpoint)
    metrics.jsonl     one JSON line per log step (cut back to the checkpoint's step on resume)
    log.txt           what the commands that trained it printed (appended on resume)
    trackers.json     the run's experiment-tracker runs and the last step each was sent (largemeta.trackers)
    tensorboard/      optional event files

A results folder (``evaluate --out``, the experiments) holds ``results.json``.
"""

from __future__ import annotations

from largemeta import console, trackers
from largemeta.checkpoint import store
from largemeta.trackers import backends

CHECKPOINT = store.MANIFEST
"""The latest checkpoint's manifest (:mod:`largemeta.checkpoint.store`)."""
LEGACY_CHECKPOINT = "checkpoint.pt"
"""Version 0.1's single-file checkpoint (:mod:`largemeta.checkpoint.legacy`), still read."""
CONFIG = "config.json"
RUN = "run.json"
METRICS = "metrics.jsonl"
TENSORBOARD = backends.TENSORBOARD
RESULTS = "results.json"
RUN_FILES = frozenset(
    {CHECKPOINT, LEGACY_CHECKPOINT, CONFIG, RUN, METRICS, TENSORBOARD, console.LOG_FILE, trackers.STATE}
)
"""What a run folder may hold, beside its checkpoint folders."""


def is_run_file(name: str) -> bool:
    """Whether ``name`` is something a run folder holds: one of :data:`RUN_FILES` or a checkpoint folder."""
    return name in RUN_FILES or bool(store.FOLDER.match(name))


def listing(names: list[str]) -> str:
    """Up to three names, and how many more."""
    shown = ", ".join(repr(n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")
