"""The layout of a training checkpoint: what is saved per run and per task, gathered from and spread over
ranks.

::

    {"config": {...}, "step": N, "world": W, "task_names": [...],
     "shared": {"step", "phi", "outer", ...},            # the same on every rank
     "tasks": [{"params", "inner_state", "task", "meta"}, ...]}   # one per meta-train task, global order

``params`` are the task's θ (shared keys and head), ``inner_state`` its inner optimizer state, ``task`` its
sampler and BatchNorm state, ``meta`` what the meta-gradient accumulated along its trajectory (Leap's path).
Each rank holds a shard of the tasks: :func:`collect` gathers every task's state on rank 0, :func:`restore`
hands each rank its own, so a run resumes on any number of ranks. This dict is version 0.1's single-file
checkpoint; the trainer now writes the sharded format (:mod:`largemeta.train.sharded_state`: no gathering),
which hands :func:`restore` the same layout with only the tasks a rank serves filled in.
"""

from __future__ import annotations

from typing import Any

import torch

from largemeta.errors import UserError
from largemeta.train import distributed
from largemeta.train.build import Run

PER_TASK = ("params", "inner_states", "meta_gradient")
"""Keys of a learner's state dict that hold one entry per local task."""


def collect(run: Run) -> dict[str, Any] | None:
    """The whole run's checkpoint state on rank 0 (None on the other ranks, which send theirs)."""
    learner_state = _to_cpu(run.learner.state_dict())
    piece = {
        "tasks": run.mine,
        "learner": learner_state,
        "task_states": [_to_cpu(t.state_dict()) for t in run.tasks],
    }
    pieces = distributed.gather(piece, run.placement.group)
    if pieces is None:
        return None
    per_task: list[Any] = [None] * len(run.specs)
    for piece in pieces:
        learner = piece["learner"]
        metas = learner.get("meta_gradient", [{}] * len(piece["tasks"]))
        for local, gi in enumerate(piece["tasks"]):
            per_task[gi] = {
                "params": learner["params"][local],
                "inner_state": learner["inner_states"][local],
                "task": piece["task_states"][local],
                "meta": metas[local],
            }
    shared = {k: v for k, v in pieces[0]["learner"].items() if k not in PER_TASK}
    return {
        "config": run.cfg.to_dict(),
        "step": shared["step"],
        "world": run.placement.world,
        "task_names": [s.name for s in run.specs],
        "shared": shared,
        "tasks": per_task,
    }


def restore(run: Run, state: dict[str, Any]) -> None:
    """Load this rank's tasks' part of ``state`` (from :func:`collect`, written by any number of ranks)."""
    names = [s.name for s in run.specs]
    if state.get("task_names") != names or len(state.get("tasks", [])) != len(names):
        raise UserError(f"checkpoint tasks {state.get('task_names')} do not match the config's {names}")
    mine = [state["tasks"][gi] for gi in run.mine]
    learner_state = dict(state["shared"])
    learner_state["params"] = [t["params"] for t in mine]
    learner_state["inner_states"] = [t["inner_state"] for t in mine]
    expected = run.learner.state_dict()
    if "meta_gradient" in expected:
        learner_state["meta_gradient"] = [t.get("meta", {}) for t in mine]
    device = run.placement.device
    try:
        _check_shapes(expected, learner_state)
        run.learner.load_state_dict(_to_device(learner_state, device))
        for task, t in zip(run.tasks, mine, strict=True):
            task.load_state_dict(_to_device(t["task"], device, keep_generators=True))
    except (KeyError, TypeError, IndexError) as err:
        raise UserError(f"checkpoint does not fit this run ({type(err).__name__}: {err})") from None


def _map(value: Any, fn) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, fn) for v in value)
    return value


def _to_cpu(value: Any) -> Any:
    return _map(value, lambda t: t.detach().cpu().clone())


def _to_device(value: Any, device: torch.device, keep_generators: bool = False) -> Any:
    # Generator states are CPU byte tensors whatever the device; everything else moves.
    return _map(value, lambda t: t if (keep_generators and t.dtype == torch.uint8) else t.to(device))


def _check_shapes(expected: Any, got: Any, where: str = "") -> None:
    """Refuse a checkpoint whose tensors do not match this run's model (another architecture)."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise UserError(
                f"checkpoint tensor {where or '?'} has shape {shape}, this run needs {tuple(expected.shape)}"
            )
    elif isinstance(expected, dict) and isinstance(got, dict):
        for k in expected:
            if k in got:
                _check_shapes(expected[k], got[k], f"{where}.{k}" if where else str(k))
    elif isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        for i, (a, b) in enumerate(zip(expected, got, strict=False)):
            _check_shapes(a, b, f"{where}[{i}]")
