"""The per-task layout of a training checkpoint, and loading it into a run on any number of ranks.

A checkpoint, as :func:`restore` takes it::

    {"task_names": [...],
     "shared": {"step", "phi", "outer", ...},                     # the learner's state common to all tasks
     "tasks": [{"params", "inner_state", "task", "meta"}, ...]}    # one per meta-train task, global order

``params`` are the task's θ (shared keys and head), ``inner_state`` its inner optimizer state, ``task`` its
sampler and BatchNorm state, ``meta`` what the meta-gradient accumulated along its trajectory (Leap's path).
With a task pool (``tasks_per_trajectory`` > 0) the trajectories belong to slots, and the tasks to the pool::

    {..., "slots": [{"params", "inner_state", "meta"}, ...],           # one per slot (M), global order
          "pool": {"generator", "queue", "assignment",                  # the draw, and each slot's task
                   "tasks": [{"private", "task"} or None, ...]}}        # every pool task: head, sampler and
                                                                        # BatchNorm state; None: never drawn

This is the layout of version 0.1's single file (``checkpoint.pt``; pools came later, with the sharded format)
and what the sharded format (:mod:`largemeta.train.sharded_state`) assembles from the entries a rank needs:
only the tasks (or slots) a rank serves need be filled in.
"""

from __future__ import annotations

from typing import Any

import torch

from largemeta.errors import UserError
from largemeta.train.build import Run, map_tensors

PER_TASK = ("params", "inner_states", "meta_gradient")
"""Keys of a learner's state dict that hold one entry per local task."""


def restore(run: Run, state: dict[str, Any]) -> None:
    """Load this rank's tasks' part of ``state`` (written by any number of ranks)."""
    names = [s.name for s in run.specs]
    if run.pool is not None or "pool" in state:
        _restore_pool(run, state, names)
        return
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


def _restore_pool(run: Run, state: dict[str, Any], names: list[str]) -> None:
    """A pooled run: the draw, each slot's task with its own state, then each slot's trajectory."""
    if run.pool is None or "pool" not in state:
        had = "with" if "pool" in state else "without"
        raise UserError(
            f"the checkpoint was written {had} a task pool (tasks_per_trajectory); this run differs"
        )
    if state.get("task_names") != names:
        raise UserError(f"checkpoint tasks {state.get('task_names')} do not match the config's {names}")
    try:
        run.pool.load_state_dict(state["pool"], state["pool"]["tasks"])
        mine = [state["slots"][s] for s in run.mine]
        learner_state = dict(state["shared"])
        learner_state["params"] = [t["params"] for t in mine]
        learner_state["inner_states"] = [t["inner_state"] for t in mine]
        if "meta_gradient" in run.learner.state_dict():
            learner_state["meta_gradient"] = [t.get("meta", {}) for t in mine]
        _check_shapes(run.learner.state_dict(), learner_state)
        run.learner.load_state_dict(_to_device(learner_state, run.placement.device))
    except (KeyError, TypeError, IndexError) as err:
        raise UserError(f"checkpoint does not fit this run ({type(err).__name__}: {err})") from None


def _to_device(value: Any, device: torch.device, keep_generators: bool = False) -> Any:
    # Generator states are CPU byte tensors whatever the device; everything else moves.
    return map_tensors(value, lambda t: t if (keep_generators and t.dtype == torch.uint8) else t.to(device))


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
