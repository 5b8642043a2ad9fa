"""Building a training run from its config: where it runs, its tasks, its learner and how a step executes.

:func:`place` joins the process group (under torchrun) and picks the device; :func:`build_run` decides where
the task images live (``data_placement``: on the device or streamed, :mod:`largemeta.data.placement`), loads
this rank's share of the suite's meta-train tasks — or, with ``tasks_per_trajectory``, sets up the task pool
that draws them (:mod:`largemeta.core.pool`; a drawn task's images are loaded when it is drawn and released
when it leaves) — creates the body, φ and the heads, and wires the learner the algorithm table asks for
(:mod:`largemeta.core.algorithms`) with the configured executor. Nothing here writes files or runs a step: the
trainer (:mod:`largemeta.train.trainer`) does both.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from largemeta.core.algorithms import ALGORITHMS
from largemeta.core.diagnostics import ShiftErrorProbe
from largemeta.core.engine import MetaLearner
from largemeta.core.inner import INNER_OPTIMIZERS
from largemeta.core.params import Params
from largemeta.core.pool import TaskPool, check_pool
from largemeta.data.cache import notice
from largemeta.data.images import TrainQuerySampler, task_seed
from largemeta.data.placement import TaskLoader, choose_placement, resident_bytes
from largemeta.data.tasks import TaskSpec, load_suite
from largemeta.devices import resolve_device
from largemeta.errors import UserError
from largemeta.execution import EXECUTORS, GRAPH, CudaGraphMetaStep
from largemeta.models import create_model, feature_size, init_head, split_state
from largemeta.models.task import ImageTask
from largemeta.runs import fit_to_body, load_weights
from largemeta.train import distributed, groups
from largemeta.train.config import META_OPTIMIZERS, TrainConfig
from largemeta.train.joint import JointLearner


@dataclass(frozen=True)
class Placement:
    """Where this process runs: its device, rank, the world size and the process group (None alone)."""

    device: torch.device
    rank: int
    world: int
    group: Any


def place(cfg: TrainConfig) -> Placement:
    """Pick the device (:func:`largemeta.devices.resolve_device`) and join the process group when launched by
    torchrun (WORLD_SIZE > 1)."""
    device = resolve_device(cfg.device, int(os.environ.get("RANK", "0")), what="config key 'device'")
    rank, world, group = distributed.init(device)
    return Placement(device, rank, world, group)


def select_tasks(
    specs: tuple[TaskSpec, ...], names: tuple[str, ...], what: str = "meta-train task"
) -> list[TaskSpec]:
    """The named tasks among ``specs`` (all of them when ``names`` is empty), in the order named; ``what``
    names them in the error for an unknown one."""
    if not names:
        return list(specs)
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"unknown {what} {unknown[0]!r} (valid: {', '.join(by_name)})")
    return [by_name[n] for n in names]


def initial_phi(cfg: TrainConfig, body_params: Params) -> Params:
    """φ from ``cfg.init`` (a run folder, an exported file, or ``torchvision:NAME``), fitted to the body."""
    if cfg.init.startswith("torchvision:"):
        name = cfg.init.split(":", 1)[1]
        if name != cfg.model:
            raise UserError(f"init {cfg.init!r} needs model {name!r}, the config has {cfg.model!r}")
        try:
            pretrained = create_model(name, in_channels=3, weights="DEFAULT")
        except (OSError, RuntimeError) as err:  # torchvision tries its hub when the weights are not cached
            raise UserError(
                f"init {cfg.init!r}: torchvision's ImageNet weights are not available here "
                f"({str(err).splitlines()[0][:120]}); offline, start from a φ of your own"
            ) from None
        source = split_state(pretrained)[0]
    else:
        source = load_weights(cfg.init).phi
    return fit_to_body(source, body_params, what=f"init {cfg.init!r}", model=cfg.model)


def map_tensors(value: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``value`` with ``fn`` applied to every tensor inside its dicts, lists and tuples."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(v, fn) for v in value)
    return value


def to_cpu(value: Any) -> Any:
    """Detached CPU copies of every tensor in ``value`` (what a checkpoint or another rank receives)."""
    return map_tensors(value, lambda t: t.detach().cpu().clone())


def pool_seed(seed: int) -> int:
    """The seed of a run's task draws, independent of every task's own (:func:`task_seed`)."""
    return int(np.random.SeedSequence([seed, 0x706F6F6C]).generate_state(1)[0])


@dataclass
class Run:
    """Everything a training run consists of on this rank.

    ``specs`` are all meta-train tasks of the run (every rank's), ``mine`` the global indices of this rank's
    tasks, ``tasks`` those tasks; ``take_step()`` takes one inner step of every local task (and whatever the
    schedule asks) and returns their losses. ``layout`` says which ranks serve which task
    (:mod:`largemeta.train.groups`).
    """

    cfg: TrainConfig
    placement: Placement
    specs: list[TaskSpec]
    mine: list[int]
    body: nn.Module
    tasks: list[ImageTask]
    learner: MetaLearner | JointLearner
    take_step: Callable[[], Tensor]
    probe: ShiftErrorProbe | None = None
    loader: TaskLoader | None = None
    pool: TaskPool | None = None
    """With ``tasks_per_trajectory``: the pool; ``mine`` are then this rank's slots and ``tasks`` their
    current tasks (the runner's own list, changed in place at every redraw)."""
    data_placement: str = "device"
    """Where the task images live: ``device`` or ``stream`` (``auto`` resolved)."""

    def log_fields(self) -> dict[str, Any]:
        """What a metrics line adds about the data: the placement and, with a pool, the active tasks and the
        draws since the last line (``{"step", "tasks"}``, the tasks in slot order)."""
        out: dict[str, Any] = {"data_placement": self.data_placement}
        if self.pool is not None:
            names = [s.name for s in self.specs]
            out["active_tasks"] = [names[p] for p in self.pool.assignment]
            draws = self.pool.take_draws()
            if draws:
                out["draws"] = [{"step": step, "tasks": [names[p] for p in drawn]} for step, drawn in draws]
        return out

    def close(self) -> None:
        """Stop what the run started outside this process's memory (streaming workers)."""
        if self.loader is not None:
            self.loader.close()

    layout: groups.Layout | None = None
    """Which ranks serve which task (None: each task on one rank, or a task pool's slots)."""


def build_run(cfg: TrainConfig, placement: Placement, saved_placement: str | None = None) -> Run:
    """Build this rank's part of the run ``cfg`` describes (no file is read but the data and ``cfg.init``).

    ``saved_placement``: where a resumed run's images were (``device`` or ``stream``), kept where it
    matters."""
    suite = load_suite(cfg.suite)
    specs = select_tasks(suite.meta_train, cfg.tasks)
    if not specs:
        raise UserError(f"suite {cfg.suite!r} has no meta-train tasks")
    channels = {s.channels for s in specs}
    if len(channels) != 1:
        raise UserError(f"meta-train tasks mix {sorted(channels)} input channels; one model needs one count")
    algo = ALGORITHMS.get(cfg.algo)
    pooled = cfg.tasks_per_trajectory > 0
    lay = None
    if pooled:  # at least one slot per rank: a pool never has task groups
        check_pool(len(specs), cfg.tasks_per_trajectory, placement.world)
        mine = list(range(placement.rank, cfg.tasks_per_trajectory, placement.world))
    else:
        lay = groups.layout(len(specs), placement.rank, placement.world)  # more ranks than tasks: task groups
        groups.check_config(cfg, lay, algo.meta_gradient)
        mine = lay.mine

    torch.manual_seed(cfg.seed)  # the same initial φ on every rank
    body = create_model(cfg.model, in_channels=channels.pop(), width=cfg.width)
    phi, buffers = split_state(body)
    if cfg.init:
        phi = initial_phi(cfg, phi)
    phi = {k: v.to(placement.device) for k, v in phi.items()}
    resident = specs if pooled else [specs[gi] for gi in mine]
    loader = task_loader(cfg, placement, resident, len(mine) if pooled else None, saved_placement)
    build_task = _task_builder(cfg, specs, body, buffers, placement.device, algo.uses_query, loader)
    pool, task_group = None, None
    if pooled:
        pool = _task_pool(cfg, specs, placement, build_task)
        tasks, heads = pool.start()
    else:
        tasks, heads = (list(part) for part in zip(*(build_task(gi) for gi in mine), strict=True))
        loader.forget_datasets()  # every task is built: free the host copies (a pool keeps them, to redraw)
        task_group = groups.serve_in_groups(
            lay, body, tasks, sync_batchnorm=cfg.sync_batchnorm, timeout_s=distributed.TIMEOUT_S
        )
    inner = INNER_OPTIMIZERS.create(
        cfg.inner_optimizer, lr=cfg.inner_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    where = {"loader": loader, "data_placement": loader.placement}
    if algo.joint:
        learner: MetaLearner | JointLearner = JointLearner(
            phi, tasks, inner, heads, group=placement.group, reduce=task_group.mean if task_group else None
        )
        return Run(cfg, placement, specs, mine, body, tasks, learner, learner.inner_step, layout=lay, **where)
    meta_gradient, schedule = algo.build(
        cfg.k, cfg.meta_every, lam=cfg.imaml_lambda, cg_steps=cfg.imaml_cg_steps
    )
    outer = getattr(torch.optim, META_OPTIMIZERS[cfg.meta_optimizer])(list(phi.values()), lr=cfg.meta_lr)
    executor = EXECUTORS.create("loop" if cfg.executor == GRAPH else cfg.executor)
    if task_group is not None:
        executor = task_group.executor(executor)
    learner = MetaLearner(
        phi,
        tasks,
        inner,
        meta_gradient,
        schedule,
        private=heads,
        outer=outer,
        reset_inner_state=cfg.reset_inner_state,
        group=placement.group,
        executor=executor,
    )
    if pool is not None:
        pool.attach(learner)  # a restart hook after the learner's own, before the probe's snapshot
        tasks = learner.runner.tasks
    take_step = CudaGraphMetaStep(learner) if cfg.executor == GRAPH else learner.inner_step
    probe = ShiftErrorProbe(learner, task=0, every=cfg.shift_error_every) if cfg.shift_error_every else None
    return Run(
        cfg, placement, specs, mine, body, tasks, learner, take_step, probe, pool=pool, layout=lay, **where
    )


def task_loader(
    cfg: TrainConfig,
    placement: Placement,
    specs: list[TaskSpec],
    at_once: int | None,
    before: str | None,
) -> TaskLoader:
    """The run's :class:`TaskLoader`, its placement resolved: ``auto`` weighs the decoded size of the
    ``at_once`` largest of ``specs`` (all: None) against the budget — or, resuming, keeps the placement the
    run had. On CUDA device and stream placement sample differently, so there a resumed run keeps its own;
    on a CPU they sample alike and a run may resume with the other."""
    loader = TaskLoader(placement.device, data_dir=cfg.data_dir or None, workers=cfg.stream_workers)
    why = ""
    if cfg.data_placement == "auto" and before in ("device", "stream"):
        chosen = before
    elif cfg.data_placement == "auto":
        size = resident_bytes(loader, specs, at_once)
        chosen, why = choose_placement("auto", size, placement.device, cfg.memory_budget_gb)
    else:
        chosen = cfg.data_placement
    if before and chosen != before and placement.device.type == "cuda":
        raise UserError(
            f"this run was trained with data_placement = {before!r}, whose batches differ from {chosen!r}'s "
            f"on CUDA; resume with --set data_placement={before}"
        )
    loader.placement = chosen
    if chosen == "stream" and why and placement.rank == 0:
        notice(f"{why} by {loader.workers} worker process(es)")
    return loader


def _task_builder(
    cfg: TrainConfig,
    specs: list[TaskSpec],
    body: nn.Module,
    buffers: Params,
    device: torch.device,
    uses_query: bool,
    loader: TaskLoader,
) -> Callable[[int], tuple[ImageTask, Params]]:
    """``build(i)``: meta-train task i (global index) as an :class:`ImageTask` and its fresh head."""

    def build(gi: int) -> tuple[ImageTask, Params]:
        spec = specs[gi]
        seed = task_seed(cfg.seed, gi)
        images = loader.task_images(spec, seed=seed)
        sampler = TrainQuerySampler(images, cfg.query_fraction if uses_query else None)
        task = ImageTask(
            body,
            sampler,
            classes=images.num_classes,
            batch_size=cfg.batch_size,
            buffers={k: v.clone() for k, v in buffers.items()},
            device=device,
            name=spec.name,
        )
        features = feature_size(body, spec.channels, spec.image_size)
        head = init_head(images.num_classes, features, torch.Generator().manual_seed(seed))
        return task, {k: v.to(device) for k, v in head.items()}

    return build


def _task_pool(
    cfg: TrainConfig,
    specs: list[TaskSpec],
    placement: Placement,
    build_task: Callable[[int], tuple[ImageTask, Params]],
) -> TaskPool:
    """The pool of every meta-train task, ``cfg.tasks_per_trajectory`` at a time: a drawn task is built (its
    images loaded) when it enters a slot, its state kept on the host and its images released when it
    leaves."""
    device = placement.device

    def activate(p: int, state: dict[str, Any] | None) -> tuple[ImageTask, Params]:
        task, head = build_task(p)
        if state is not None:
            head = {k: v.to(device) for k, v in state["private"].items()}
            task.load_state_dict(state["task"])
        return task, head

    def deactivate(p: int, task: ImageTask, private: Params) -> dict[str, Any]:
        state = {"private": to_cpu(private), "task": to_cpu(task.state_dict())}
        close = getattr(task.sampler, "close", None)
        if close is not None:
            close()
        return state

    def exchange(leaving: dict[int, Any]) -> dict[int, Any]:
        merged: dict[int, Any] = {}
        for part in distributed.all_gather(leaving, placement.group):
            merged.update(part)
        return merged

    return TaskPool(
        len(specs),
        cfg.tasks_per_trajectory,
        seed=pool_seed(cfg.seed),
        activate=activate,
        deactivate=deactivate,
        rank=placement.rank,
        world=placement.world,
        exchange=exchange,
    )
