"""Saving a training run's checkpoint and restoring one into a run, on any number of ranks.

Every entry of the checkpoint (:mod:`largemeta.runs.checkpoint` names them) is a *Stateful* object of the
live run — ``state_dict()`` / ``load_state_dict(state)``, as ``torch.distributed.checkpoint`` defines the
protocol — so saving is ``{name: obj.state_dict()}`` for the entries this rank writes, and restoring is
``obj.load_state_dict(loaded[name])`` for the entries this rank serves, in one order::

    a fixed task list:  "shared" (rank 0 writes it), "task/<i>" (the leader of the ranks serving task i)
    a task pool:        "pooltask/<p>" (the pool tasks' states: the rank running it, rank 0 while it rests),
                        "pool" (the draw; the pool itself, loading it puts each slot's task back), "shared",
                        "slot/<s>" (its rank)

A checkpoint is read on any world size (each rank loads what it serves now), and one of version 0.1 comes
in as the same entries (:func:`largemeta.runs.checkpoint.read`), so there is one restore path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from largemeta.checkpoint import store
from largemeta.core.assignment import Static, TaskPool
from largemeta.core.params import map_tensors
from largemeta.errors import UserError
from largemeta.runs.checkpoint import (
    POOL,
    POOL_TASK,
    SHARED,
    CheckpointOnDisk,
    pool_task_entry,
    slot_entry,
    task_entry,
)
from largemeta.runs.names import LEGACY_CHECKPOINT
from largemeta.train import distributed
from largemeta.train.build import Run


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class Shared:
    """Entry "shared": the learner's state common to all tasks."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def state_dict(self) -> dict[str, Any]:
        return self.run.learner.shared_state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        learner = self.run.learner
        check_shapes(learner.shared_state_dict(), state, SHARED)
        learner.load_shared_state_dict(to_device(state, self.run.processes.device))


class Trajectory:
    """Entry "task/<i>" (a local task's trajectory and the task's own state) or, with a pool, "slot/<s>" (a
    local slot's trajectory: the task's own state is its pool task's entry)."""

    def __init__(self, run: Run, local: int, *, with_task: bool) -> None:
        self.run, self.local, self.with_task = run, local, with_task

    def state_dict(self) -> dict[str, Any]:
        state = self.run.learner.task_state_dict(self.local)
        if self.with_task:
            state["task"] = self.run.tasks[self.local].state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        learner, device = self.run.learner, self.run.processes.device
        check_shapes(learner.task_state_dict(self.local), state, f"trajectory {self.local}")
        learner.load_task_state_dict(self.local, to_device(state, device))
        if self.with_task:
            self.run.tasks[self.local].load_state_dict(to_device(state["task"], device, keep_generators=True))


class PoolTask:
    """Entry "pooltask/<p>": pool task p's own state (head, sampler and BatchNorm state) — live while it runs
    in one of this rank's slots, else as it left its last slot."""

    def __init__(self, run: Run, pool: TaskPool, p: int) -> None:
        self.run, self.pool, self.p = run, pool, p

    def state_dict(self) -> Any:
        for local, s in enumerate(self.pool.local):
            if self.pool.assignment[s] == self.p:
                task = self.run.tasks[local]
                return {"private": self.run.learner.runner.private(local), "task": task.state_dict()}
        return self.pool.stored[self.p]

    def load_state_dict(self, state: Any) -> None:
        self.pool.stored[self.p] = state


class _FixedTasks:
    """A fixed task list: entry "task/<i>" for the trajectory in slot i (which runs task i) and the task's
    own state, written by the slot's group leader."""

    pooled = False

    @staticmethod
    def to_write(run: Run) -> dict[str, Stateful]:
        if not run.layout.leader:
            return {}
        return {task_entry(s): Trajectory(run, local, with_task=True) for local, s in enumerate(run.mine)}

    @staticmethod
    def to_load(run: Run, on_disk: CheckpointOnDisk) -> dict[str, Stateful]:
        tasks = {task_entry(s): Trajectory(run, local, with_task=True) for local, s in enumerate(run.mine)}
        return {SHARED: Shared(run), **tasks}


class _Pooled:
    """A task pool: "slot/<s>" for each slot's trajectory (its rank), "pooltask/<p>" for each pool task's own
    state (the rank running it; rank 0 while it rests), "pool" for the draw (rank 0). Loading puts the pool
    tasks' states in first, then the draw (which puts each slot's task back), then the trajectories."""

    pooled = True

    @staticmethod
    def to_write(run: Run) -> dict[str, Stateful]:
        pool = run.assignment
        assert isinstance(pool, TaskPool)
        out: dict[str, Stateful] = {}
        if run.processes.rank == 0:
            out[POOL] = pool
            out.update(
                {pool_task_entry(p): PoolTask(run, pool, p) for p in pool.stored if p not in pool.assignment}
            )
        for local, s in enumerate(run.mine):
            out[slot_entry(s)] = Trajectory(run, local, with_task=False)
            out[pool_task_entry(pool.assignment[s])] = PoolTask(run, pool, pool.assignment[s])
        return out

    @staticmethod
    def to_load(run: Run, on_disk: CheckpointOnDisk) -> dict[str, Stateful]:
        pool = run.assignment
        assert isinstance(pool, TaskPool)
        saved = [int(k.removeprefix(POOL_TASK)) for k in on_disk.entries if k.startswith(POOL_TASK)]
        return {
            **{pool_task_entry(p): PoolTask(run, pool, p) for p in saved},
            POOL: pool,
            SHARED: Shared(run),
            **{slot_entry(s): Trajectory(run, local, with_task=False) for local, s in enumerate(run.mine)},
        }


_SCHEMES = {Static: _FixedTasks, TaskPool: _Pooled}
"""The entries of each kind of task assignment."""


def entries_to_write(run: Run) -> dict[str, Stateful]:
    """The entries this rank writes: "shared" on rank 0, and those of the slots it leads (see the schemes)."""
    shared: dict[str, Stateful] = {SHARED: Shared(run)} if run.processes.rank == 0 else {}
    return {**shared, **_SCHEMES[type(run.assignment)].to_write(run)}


def entries_to_load(run: Run, on_disk: CheckpointOnDisk) -> dict[str, Stateful]:
    """The entries this rank serves, in the order they load."""
    return _SCHEMES[type(run.assignment)].to_load(run, on_disk)


def manifest_record(
    run: Run, identity: dict[str, Any], metrics_window: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    """The checkpoint's ``info``: what run wrote it, and the metrics window open at its step (each task's
    sum of training losses and steps since the last metrics line, so that a resume's first line averages
    over the whole window)."""
    return {
        "config": run.cfg.to_dict(),
        "identity": identity,
        "world": run.processes.world,
        "task_names": [s.name for s in run.specs],
        "data_placement": run.data_placement,
        "metrics_window": metrics_window or {},
    }


def save(
    run: Run, run_dir: Path, identity: dict[str, Any], metrics_window: dict[str, list[float]] | None = None
) -> None:
    """Write the run's checkpoint (a collective under torchrun: every rank writes its own entries)."""
    entries = {name: on_cpu(obj.state_dict()) for name, obj in entries_to_write(run).items()}
    info = manifest_record(run, identity, metrics_window)
    store.save(run_dir, run.learner.step, entries, info=info, group=run.processes.group)
    legacy = Path(run_dir) / LEGACY_CHECKPOINT
    if run.processes.rank == 0 and legacy.exists():
        legacy.unlink()  # superseded by the manifest just published (a version-0.1 run, resumed)


def metrics_window(on_disk: CheckpointOnDisk) -> dict[str, list[float]]:
    """The metrics window a checkpoint recorded (:func:`manifest_record`; empty when none or malformed:
    a checkpoint from before windows were recorded starts a new one)."""
    window = on_disk.info.get("metrics_window")
    if not isinstance(window, dict):
        return {}
    ok = {
        str(k): [float(v[0]), int(v[1])]
        for k, v in window.items()
        if isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
    }
    return ok if len(ok) == len(window) else {}


def restore(run: Run, on_disk: CheckpointOnDisk) -> None:
    """Load into ``run`` the entries this rank serves (any world size). Under torchrun, a rank that cannot
    load makes every rank stop with the same one-line error (no rank trains alone)."""
    error = None
    try:
        on_disk.check_fits([s.name for s in run.specs], pooled=_SCHEMES[type(run.assignment)].pooled)
        wanted = entries_to_load(run, on_disk)
        loaded = on_disk.load(wanted)
        try:
            for name, obj in wanted.items():
                obj.load_state_dict(loaded[name])
        except (KeyError, TypeError, IndexError) as err:
            raise UserError(f"checkpoint does not fit this run ({type(err).__name__}: {err})") from None
    except UserError as err:
        error = str(err)
    group = run.processes.group
    if group is not None:
        errors: list[Any] = [None] * run.processes.world
        distributed.guarded(
            lambda: dist.all_gather_object(errors, error, group=group), "loading the checkpoint"
        )
        error = next((e for e in errors if e is not None), None)
    if error is not None:
        raise UserError(error)


def on_cpu(value: Any) -> Any:
    """``value`` with its tensors on the CPU — not copied again when already there: state dicts are copies
    already, and a second one would double rank 0's memory at every checkpoint."""
    return map_tensors(value, lambda t: t.detach().cpu())


def to_device(value: Any, device: torch.device, keep_generators: bool = False) -> Any:
    """``value`` with its tensors on ``device``; with ``keep_generators``, uint8 tensors (generator states,
    CPU byte tensors whatever the device) stay."""
    return map_tensors(value, lambda t: t if (keep_generators and t.dtype == torch.uint8) else t.to(device))


def check_shapes(expected: Any, got: Any, where: str = "") -> None:
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
                check_shapes(expected[k], got[k], f"{where}.{k}" if where else str(k))
    elif isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        for i, (a, b) in enumerate(zip(expected, got, strict=False)):
            check_shapes(a, b, f"{where}[{i}]")
