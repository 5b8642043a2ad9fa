"""What a results file records about the run that wrote it: the software, the code's git commit, the device
and the command line (``environment``).

Read at run time, by the process that measures, and stored in the results file: a report shows the
environment the numbers were measured in, never the one of the machine that writes the report.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_command_line: list[str] | None = None


def set_command_line(argv: Sequence[str]) -> None:
    """The command line this process runs (the ``largemeta`` command sets it; default: ``sys.argv``)."""
    global _command_line
    _command_line = list(argv)


def command_line() -> list[str]:
    return list(_command_line if _command_line is not None else sys.argv)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout this package's code is run from (None: not run from one, e.g. an
    installed wheel, or git is missing). ``+dirty`` is appended when tracked files differ from it."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    # the package's own file must be tracked: a wheel installed in a venv inside some checkout is not
    if git("ls-files", "--error-unmatch", Path(__file__).name) is None:
        return None
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", str(here))
    return f"{commit}+dirty" if dirty else commit


def device_name(device: Any) -> str:
    """The device as used: ``cpu``, or a CUDA device's name (``NVIDIA H100 80GB HBM3 (cuda:0)``)."""
    text = str(device)
    if not text.startswith("cuda"):
        return text
    try:
        import torch

        return f"{torch.cuda.get_device_name(torch.device(text))} ({text})"
    except (RuntimeError, AssertionError, ValueError):
        return text


def environment(device: Any) -> dict[str, Any]:
    """The ``environment`` record of a results file: largemeta, git commit (None outside a checkout), torch,
    device as used, Python, and the command line."""
    import torch

    from largemeta._version import __version__

    return {
        "largemeta": __version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "device": device_name(device),
        "python": platform.python_version(),
        "argv": command_line(),
    }
