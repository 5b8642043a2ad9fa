"""What the tests that run the command line share: the package's source folder, the environment of a
subprocess (the package importable, one thread per process) and a config dict as ``--set`` flags."""

from __future__ import annotations

import os
from pathlib import Path

import largemeta

SRC = str(Path(largemeta.__file__).resolve().parents[1])


def env(**extra: str) -> dict[str, str]:
    """This environment, with the package importable and one thread per process, plus ``extra``."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def sets(cfg: dict) -> list[str]:
    """A config dict (but its ``steps``, which the commands take as a flag) as ``--set KEY=VALUE`` flags."""
    return [a for k, v in cfg.items() if k != "steps" for a in ("--set", f"{k}={v}")]
