"""Where a command runs: one rule for every command's ``--device`` and for the config's ``device`` key.

``auto`` (the default everywhere) is CUDA when this machine has it, else MPS (Apple silicon) when it has
that, else the CPU. ``cpu``, ``cuda`` (this process's GPU: LOCAL_RANK's under torchrun), ``cuda:N`` and
``mps`` name one. A name that is none of these, or a device this machine does not have, is refused in one line
(:class:`~largemeta.errors.UserError`, exit 2) naming the value and what is valid — before any work: every
command resolves its device with :func:`resolve_device` first.

Importing this module imports no torch (the command line's start-up reads it).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from largemeta.errors import UserError

if TYPE_CHECKING:
    import torch

DEFAULT = "auto"
"""The default device of every command and of the config."""
VALID = "auto, cpu, cuda, cuda:N, mps"
RULE = "auto: CUDA, then MPS, then CPU"
HELP = f"{VALID} ({RULE}; default {DEFAULT})"
"""What a ``--device`` flag's help says."""
_NAME = re.compile(r"auto|cpu|cuda|cuda:\d+|mps")


def check_name(name: object, what: str = "device") -> str:
    """``name`` when it is a device name (:data:`VALID`), whether or not this machine has the device; else one
    line naming ``what`` (``--device``, ``config key 'device'``), the value and the valid names."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(f"{what} must be one of {VALID} ({RULE}), got {name!r}")
    return name


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available() -> list[str]:
    """The device names valid on this machine."""
    import torch

    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names += ["cuda", "cuda:0" if count == 1 else f"cuda:0..cuda:{count - 1}"]
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(name: str | torch.device, rank: int = 0, *, what: str = "device") -> torch.device:
    """The device ``name`` means here: ``auto`` is CUDA, else MPS, else the CPU; ``cuda`` is LOCAL_RANK's GPU
    (``rank``'s when LOCAL_RANK is unset), made the current CUDA device as ``cuda:N`` is. A bad name or a
    device this machine lacks is one line (:class:`UserError`) naming ``what`` and what is valid here."""
    import torch

    name = check_name(str(name) if isinstance(name, torch.device) else name, what)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "mps":
        if not _mps_available():
            raise UserError(
                f"{what} is 'mps', but MPS is not available here (valid here: {', '.join(available())})"
            )
        return torch.device("mps")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"{what} is {name!r}, but CUDA is not available here (valid here: {', '.join(available())})"
            )
        count = torch.cuda.device_count()
        if name == "cuda":
            index = int(os.environ.get("LOCAL_RANK", rank)) % count
        else:
            index = int(name.split(":", 1)[1])
            if index >= count:
                raise UserError(
                    f"{what} is {name!r}, but this machine has {count} CUDA device"
                    f"{'s' if count != 1 else ''} (valid here: {', '.join(available())})"
                )
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
        return device
    return torch.device(name)
