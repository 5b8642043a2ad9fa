"""A training run's checkpoint in the sharded format: who writes which entry, and how a run resumes on any
number of ranks.

Entries (:mod:`largemeta.sharded_checkpoint` stores each as it comes, tensors and all)::

    "shared"     the learner's state common to all tasks: step, φ, the outer optimizer (or joint training's
                 body optimizer)                                                   — written by rank 0
    "task/<i>"   meta-train task i (global index): "params" (θ: shared keys and head), "inner_state",
                 "task" (sampler and BatchNorm state), "meta" (the meta-gradient's state along the
                 trajectory, e.g. Leap's path)                                     — written by the task's
                 group leader (its only rank when there are no more ranks than tasks)

and the manifest's ``info``: ``config`` (the resolved config), ``world`` (ranks that wrote it),
``task_names``. So no rank ever holds another rank's tasks: rank 0's memory at a checkpoint is its own tasks
and φ, whatever the number of tasks on other ranks. To resume, each rank reads "shared" and the entries of
the tasks it serves on the *new* world size (:func:`restore`), then hands the same per-task layout that
:func:`largemeta.train.state.restore` takes — so a checkpoint of version 0.1 (one ``checkpoint.pt`` file,
gathered on rank 0) still resumes, through the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from largemeta import checkpoint, sharded_checkpoint
from largemeta.errors import UserError
from largemeta.runs import CHECKPOINT_NAME, LEGACY_CHECKPOINT
from largemeta.train import distributed, state
from largemeta.train.build import Run

SHARED = "shared"


def task_entry(index: int) -> str:
    return f"task/{index}"


@dataclass(frozen=True)
class Saved:
    """A run folder's latest checkpoint, located and checked, not yet loaded into a run."""

    step: int
    manifest: sharded_checkpoint.Manifest | None = None
    legacy: dict[str, Any] | None = None
    """The whole state of a version-0.1 ``checkpoint.pt`` (read in full on every rank)."""


def exists(run_dir: Path) -> bool:
    """Whether the run folder holds a checkpoint (either format)."""
    return (
        sharded_checkpoint.exists(run_dir, CHECKPOINT_NAME) or (Path(run_dir) / LEGACY_CHECKPOINT).is_file()
    )


def read(run_dir: Path) -> Saved:
    """The run folder's checkpoint: the sharded manifest (verified), else a version-0.1 ``checkpoint.pt``."""
    run_dir = Path(run_dir)
    if sharded_checkpoint.exists(run_dir, CHECKPOINT_NAME):
        manifest = sharded_checkpoint.read_manifest(run_dir, CHECKPOINT_NAME)
        return Saved(manifest.step, manifest=manifest)
    legacy = checkpoint.load(run_dir / LEGACY_CHECKPOINT, map_location="cpu")
    return Saved(int(legacy["step"]), legacy=legacy)


def owned(run: Run) -> dict[str, Any]:
    """The entries this rank writes: "shared" on rank 0, and the tasks it leads."""
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


def _on_cpu(value: Any) -> Any:
    """``value`` with its tensors on the CPU — not copied again when already there: state dicts are copies
    already, and a second one would double rank 0's memory at every checkpoint."""
    return state._map(value, lambda t: t.detach().cpu())


def info(run: Run) -> dict[str, Any]:
    return {
        "config": run.cfg.to_dict(),
        "world": run.placement.world,
        "task_names": [s.name for s in run.specs],
    }


def save(run: Run, run_dir: Path) -> None:
    """Write the run's checkpoint (a collective under torchrun: every rank writes its own entries)."""
    sharded_checkpoint.save(
        run_dir,
        run.learner.step,
        owned(run),
        info=info(run),
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
    keys = [SHARED, *(task_entry(gi) for gi in run.mine)]
    got = sharded_checkpoint.load(run_dir, keys, manifest=manifest, name=CHECKPOINT_NAME)
    whole = {
        "task_names": names,
        "shared": got[SHARED],
        "tasks": [got.get(task_entry(i)) for i in range(len(names))],
    }
    state.restore(run, whole)


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
    return {
        "config": manifest.info.get("config"),
        "step": manifest.step,
        "world": manifest.info.get("world"),
        "task_names": names,
        "shared": got[SHARED],
        "tasks": [got.get(task_entry(i)) for i in range(len(names))],
    }
