"""A training run's checkpoint in the sharded format: who writes which entry, and how a run resumes on any
number of ranks.

Entries (:mod:`largemeta.sharded_checkpoint` stores each as it comes, tensors and all)::

    "shared"     the learner's state common to all tasks: step, φ, the outer optimizer (or joint training's
                 body optimizer)                                                   — written by rank 0
    "task/<i>"   meta-train task i (global index): "params" (θ: shared keys and head), "inner_state",
                 "task" (sampler and BatchNorm state), "meta" (the meta-gradient's state along the
                 trajectory, e.g. Leap's path)                                     — written by the task's
                 group leader (its only rank when there are no more ranks than tasks)

With a task pool the trajectories belong to slots and the tasks to the pool::

    "slot/<s>"      slot s's trajectory: "params", "inner_state", "meta"          — its rank
    "pooltask/<p>"  pool task p's own state: "private" (its head), "task"           — the rank running it, or
                                                                                     rank 0 while it rests
    "pool"          the draw: generator, queue, assignment                          — rank 0

and the manifest's ``info``: ``config`` (the resolved config), ``identity`` (the run's: run id, algorithm,
seed), ``world`` (ranks that wrote it), ``task_names``, ``data_placement``. So no rank ever holds another
rank's tasks: rank 0's memory at a checkpoint is its own tasks and φ, whatever the number of tasks on other
ranks. To resume, each rank reads "shared" and the entries of the tasks it serves on the *new* world size
(:func:`restore`), then hands the same per-task layout that :func:`largemeta.train.state.restore` takes — so a
checkpoint of version 0.1 (one ``checkpoint.pt`` file, gathered on rank 0) still resumes, through the same
function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from largemeta import sharded_checkpoint
from largemeta.errors import UserError
from largemeta.runs import CHECKPOINT_NAME, LEGACY_CHECKPOINT, locate_checkpoint, read_legacy_checkpoint
from largemeta.train import distributed, state
from largemeta.train.build import Run, map_tensors

SHARED, POOL = "shared", "pool"


def task_entry(index: int) -> str:
    return f"task/{index}"


def slot_entry(slot: int) -> str:
    return f"slot/{slot}"


def pool_task_entry(task: int) -> str:
    return f"pooltask/{task}"


@dataclass(frozen=True)
class Saved:
    """A run folder's latest checkpoint, located and checked, not yet loaded into a run: what it records
    (``step``, ``info``) is read without its tensors."""

    step: int
    info: dict[str, Any]
    manifest: sharded_checkpoint.Manifest | None = None
    legacy: dict[str, Any] | None = None
    """The whole state of a version-0.1 ``checkpoint.pt`` (read in full on every rank)."""
    recovered: str | None = None
    """Why the checkpoint is not the one ``checkpoint.json`` names
    (:func:`largemeta.runs.locate_checkpoint`)."""

    @property
    def config(self) -> dict[str, Any]:
        return self.info["config"]

    @property
    def identity(self) -> dict[str, Any] | None:
        return self.info.get("identity")

    @property
    def data_placement(self) -> str | None:
        return self.info.get("data_placement")


def read(run_dir: Path) -> Saved:
    """The run folder's checkpoint: the sharded manifest (verified, complete), else a version-0.1
    ``checkpoint.pt``; a one-line error when it is neither."""
    run_dir = Path(run_dir)
    if sharded_checkpoint.exists(run_dir, CHECKPOINT_NAME) or not (run_dir / LEGACY_CHECKPOINT).is_file():
        manifest, recovered = locate_checkpoint(run_dir)
        return Saved(manifest.step, manifest.info, manifest=manifest, recovered=recovered)
    legacy = read_legacy_checkpoint(run_dir)
    info = {
        k: legacy[k] for k in ("config", "identity", "task_names", "world", "data_placement") if k in legacy
    }
    return Saved(int(legacy["step"]), info, legacy=legacy)


def owned(run: Run) -> dict[str, Any]:
    """The entries this rank writes: "shared" on rank 0, and the tasks it leads (or its pool slots)."""
    if run.pool is not None:
        return _owned_pool(run)
    leads = run.layout is None or run.layout.leader
    if run.placement.rank != 0 and not leads:
        return {}
    learner = _on_cpu(run.learner.state_dict())
    entries: dict[str, Any] = {}
    if run.placement.rank == 0:
        entries[SHARED] = {k: v for k, v in learner.items() if k not in state.PER_TASK}
    if leads:
        metas = learner.get("meta_gradient") or [{}] * len(run.mine)
        for local, gi in enumerate(run.mine):
            entries[task_entry(gi)] = {
                "params": learner["params"][local],
                "inner_state": learner["inner_states"][local],
                "task": _on_cpu(run.tasks[local].state_dict()),
                "meta": metas[local],
            }
    return entries


def _owned_pool(run: Run) -> dict[str, Any]:
    """A pooled run: this rank's slots and their running tasks; rank 0 also "shared", the draw and the resting
    tasks (every rank keeps them all)."""
    pool = run.pool
    assert pool is not None
    learner = _on_cpu(run.learner.state_dict())
    entries: dict[str, Any] = {}
    if run.placement.rank == 0:
        entries[SHARED] = {k: v for k, v in learner.items() if k not in state.PER_TASK}
        entries[POOL] = pool.state_dict()
        for p, resting in pool.stored.items():
            if p not in pool.assignment:
                entries[pool_task_entry(p)] = resting
    metas = learner.get("meta_gradient") or [{}] * len(run.mine)
    for local, s in enumerate(run.mine):
        entries[slot_entry(s)] = {
            "params": learner["params"][local],
            "inner_state": learner["inner_states"][local],
            "meta": metas[local],
        }
        entries[pool_task_entry(pool.assignment[s])] = {
            "private": _on_cpu(pool.private(local)),
            "task": _on_cpu(run.tasks[local].state_dict()),
        }
    return entries


def _on_cpu(value: Any) -> Any:
    """``value`` with its tensors on the CPU — not copied again when already there: state dicts are copies
    already, and a second one would double rank 0's memory at every checkpoint."""
    return map_tensors(value, lambda t: t.detach().cpu())


def info(run: Run, identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "config": run.cfg.to_dict(),
        "identity": identity,
        "world": run.placement.world,
        "task_names": [s.name for s in run.specs],
        "data_placement": run.data_placement,
    }


def save(run: Run, run_dir: Path, identity: dict[str, Any]) -> None:
    """Write the run's checkpoint (a collective under torchrun: every rank writes its own entries)."""
    sharded_checkpoint.save(
        run_dir,
        run.learner.step,
        owned(run),
        info=info(run, identity),
        group=run.placement.group,
        name=CHECKPOINT_NAME,
    )
    legacy = Path(run_dir) / LEGACY_CHECKPOINT
    if run.placement.rank == 0 and legacy.exists():
        legacy.unlink()  # superseded by the manifest just published (a version-0.1 run, resumed)


def restore(run: Run, run_dir: Path, saved: Saved) -> None:
    """Load into ``run`` the entries of the tasks this rank serves (any world size). Under torchrun, a rank
    that cannot load makes every rank stop with the same one-line error (no rank trains alone)."""
    error = None
    try:
        _restore(run, run_dir, saved)
    except UserError as err:
        error = str(err)
    group = run.placement.group
    if group is not None:
        errors: list[Any] = [None] * run.placement.world
        distributed.guarded(
            lambda: dist.all_gather_object(errors, error, group=group), "loading the checkpoint"
        )
        error = next((e for e in errors if e is not None), None)
    if error is not None:
        raise UserError(error)


def _restore(run: Run, run_dir: Path, saved: Saved) -> None:
    if saved.legacy is not None:
        state.restore(run, saved.legacy)
        return
    manifest = saved.manifest
    assert manifest is not None
    names = [s.name for s in run.specs]
    if manifest.info.get("task_names") != names:
        raise UserError(
            f"checkpoint tasks {manifest.info.get('task_names')} do not match the config's {names}"
        )
    pooled = POOL in manifest.entries
    if (run.pool is not None) != pooled:
        had = "with" if pooled else "without"
        raise UserError(
            f"the checkpoint was written {had} a task pool (tasks_per_trajectory); this run differs"
        )
    if run.pool is None:
        keys = [SHARED, *(task_entry(gi) for gi in run.mine)]
    else:  # the draw, every pool task (a resting one may be drawn next), and this rank's slots
        keys = [
            SHARED,
            POOL,
            *(k for k in manifest.entries if k.startswith("pooltask/")),
            *(slot_entry(s) for s in run.mine),
        ]
    got = sharded_checkpoint.load(run_dir, keys, manifest=manifest, name=CHECKPOINT_NAME)
    state.restore(
        run,
        assemble(got, names, run.pool.size if run.pool else 0, run.pool.per_trajectory if run.pool else 0),
    )


def assemble(got: dict[str, Any], names: list[str], pool_size: int, slots: int) -> dict[str, Any]:
    """The per-task layout :func:`largemeta.train.state.restore` takes, from entries (read, or gathered)."""
    whole: dict[str, Any] = {"task_names": names, "shared": got[SHARED]}
    if POOL in got:
        tasks = [got.get(pool_task_entry(p)) for p in range(pool_size)]
        whole["pool"] = {**got[POOL], "tasks": tasks}
        whole["slots"] = [got.get(slot_entry(s)) for s in range(slots)]
    else:
        whole["tasks"] = [got.get(task_entry(i)) for i in range(len(names))]
    return whole


def read_all(run_dir: Path) -> dict[str, Any]:
    """The whole checkpoint of a run folder in one process, laid out as version 0.1's single file
    (``config``, ``step``, ``world``, ``task_names``, ``shared``, ``tasks``): for tools and tests."""
    saved = read(run_dir)
    if saved.legacy is not None:
        return saved.legacy
    manifest = saved.manifest
    assert manifest is not None
    got = sharded_checkpoint.load(run_dir, manifest=manifest, name=CHECKPOINT_NAME)
    names = list(manifest.info.get("task_names", []))
    config = manifest.info.get("config") or {}
    size, slots = (len(names), int(config.get("tasks_per_trajectory", 0))) if POOL in got else (0, 0)
    return {**saved.info, "step": manifest.step, **assemble(got, names, size, slots)}
