"""The layout of a training checkpoint: what is saved per run and per task, gathered from and spread over
ranks.

::

    {"config": {...}, "step": N, "world": W, "task_names": [...], "data_placement": "device" | "stream",
     "shared": {"step", "phi", "outer", ...},            # the same on every rank
     "tasks": [{"params", "inner_state", "task", "meta"}, ...]}   # one per meta-train task, global order

``params`` are the task's θ (shared keys and head), ``inner_state`` its inner optimizer state, ``task`` its
sampler and BatchNorm state, ``meta`` what the meta-gradient accumulated along its trajectory (Leap's path).
Each rank holds a shard of the tasks: :func:`collect` gathers every task's state on rank 0, :func:`restore`
hands each rank its own, so a run resumes on any number of ranks.

With a task pool (``tasks_per_trajectory`` > 0) the trajectories belong to slots, and the tasks to the pool::

    {..., "shared": {...},
     "slots": [{"params", "inner_state", "meta"}, ...],          # one per slot (M), global order
     "pool": {"generator", "queue", "assignment",                # the draw, and the task of each slot
              "tasks": [{"private", "task"} or None, ...]}}      # every pool task (N): its head, sampler
                                                                 # and BatchNorm state; None: never drawn

``data_placement`` is where the images were (``auto`` resolved), which a resumed run keeps where it matters.
"""

from __future__ import annotations

from typing import Any

import torch

from largemeta.errors import UserError
from largemeta.train import distributed
from largemeta.train.build import Run, map_tensors, to_cpu

PER_TASK = ("params", "inner_states", "meta_gradient")
"""Keys of a learner's state dict that hold one entry per local task."""


def collect(run: Run) -> dict[str, Any] | None:
    """The whole run's checkpoint state on rank 0 (None on the other ranks, which send theirs)."""
    learner_state = to_cpu(run.learner.state_dict())
    piece = {
        "tasks": run.mine,
        "learner": learner_state,
        "task_states": [to_cpu(t.state_dict()) for t in run.tasks],
    }
    if run.pool is not None:
        piece["active"] = [run.pool.assignment[s] for s in run.mine]
        piece["private"] = [to_cpu(run.pool.private(local)) for local in range(len(run.mine))]
    pieces = distributed.gather(piece, run.placement.group)
    if pieces is None:
        return None
    if run.pool is not None:
        return _collect_pool(run, pieces)
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
    return {**_header(run, shared), "tasks": per_task}


def _header(run: Run, shared: dict[str, Any]) -> dict[str, Any]:
    return {
        "config": run.cfg.to_dict(),
        "step": shared["step"],
        "world": run.placement.world,
        "task_names": [s.name for s in run.specs],
        "data_placement": run.data_placement,
        "shared": shared,
    }


def _collect_pool(run: Run, pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """A pooled run's checkpoint: every slot's trajectory, and every pool task's own state — the live one for
    active tasks (from the rank running it), the kept one for the others (every rank has them all)."""
    assert run.pool is not None
    slots: list[Any] = [None] * run.pool.per_trajectory
    tasks = [run.pool.stored.get(p) for p in range(run.pool.size)]
    for piece in pieces:
        learner = piece["learner"]
        metas = learner.get("meta_gradient", [{}] * len(piece["tasks"]))
        for local, s in enumerate(piece["tasks"]):
            slots[s] = {
                "params": learner["params"][local],
                "inner_state": learner["inner_states"][local],
                "meta": metas[local],
            }
            tasks[piece["active"][local]] = {
                "private": piece["private"][local],
                "task": piece["task_states"][local],
            }
    shared = {k: v for k, v in pieces[0]["learner"].items() if k not in PER_TASK}
    return {**_header(run, shared), "pool": {**run.pool.state_dict(), "tasks": tasks}, "slots": slots}


def restore(run: Run, state: dict[str, Any]) -> None:
    """Load this rank's tasks' part of ``state`` (from :func:`collect`, written by any number of ranks)."""
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
