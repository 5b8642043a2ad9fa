"""Every path in a run's config, made absolute once, where it is given, so that a run folder means the same
files from any working directory (a requeued job starts wherever its scheduler puts it).

The keys that hold paths: ``suite`` (a path to a TOML file; a built-in suite's name stays a name),
``data_dir``, ``model`` (the file of ``FILE.py:factory``; a module, an entry point or ``timm:`` stays as
it is) and ``init`` (a run folder or a ``.safetensors`` file; ``torchvision:NAME`` stays). ``~`` is
expanded; links are kept as written (``os.path.abspath``).

:func:`check_recorded` is what ``--resume`` asks before building: a recorded path that is gone is one line
naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from largemeta.data.tasks.suite import list_suites
from largemeta.errors import UserError


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def model_file(model: str) -> str | None:
    """The file part of a ``FILE.py:factory`` model reference (None: not a file)."""
    where = model.rpartition(":")[0]
    if where and (where.endswith(".py") or "/" in where or "\\" in where):
        return where
    return None


def absolute(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (config keys) with every path made absolute; other keys as given."""
    out = dict(values)
    suite = out.get("suite")
    if isinstance(suite, str) and suite and suite not in list_suites():
        out["suite"] = _absolute(suite)
    if isinstance(out.get("data_dir"), str) and out["data_dir"]:
        out["data_dir"] = _absolute(out["data_dir"])
    model = out.get("model")
    if isinstance(model, str):
        file = model_file(model)
        if file is not None:
            out["model"] = f"{_absolute(file)}:{model.rpartition(':')[2]}"
    init = out.get("init")
    if isinstance(init, str) and init and not init.startswith("torchvision:"):
        out["init"] = _absolute(init)
    return out


def check_recorded(config: Any, run_dir: Path) -> None:
    """A one-line error when a path the run recorded (``config``: its TrainConfig) is gone: the suite file,
    the model's file or the init (only an absolute path: an older run's relative one is read as before)."""
    recorded = [("suite", config.suite if config.suite not in list_suites() else "")]
    recorded.append(("model file", model_file(config.model) or ""))
    if not config.init.startswith("torchvision:"):
        recorded.append(("init", config.init))
    for what, path in recorded:
        if path and os.path.isabs(path) and not os.path.exists(path):
            raise UserError(
                f"the {what} {path!r} that run {str(run_dir)!r} recorded is gone (moved or deleted); put it "
                "back at that path to resume the run"
            )
