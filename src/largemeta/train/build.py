"""Building a training run from its config: where it runs, its tasks, its learner and how a step executes.

:func:`place` joins the process group (under torchrun) and picks the device; :func:`build_run` decides where
the task images live (``data_placement``: device or streamed, :mod:`largemeta.data.tasks.loader`), loads
this rank's share of the suite's meta-train tasks — a fixed task list, or, with ``tasks_per_trajectory``, a
task pool that draws them (:mod:`largemeta.core.assignment`; a drawn task's images are loaded when it is drawn
and released when it leaves), its slots laid out over the ranks by :mod:`largemeta.train.layout` — creates
the body, φ and the heads, and wires the learner the algorithm table asks for
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

from largemeta.console import notice
from largemeta.core.algorithms import ALGORITHMS
from largemeta.core.assignment import Static, TaskAssignment, TaskPool, check_pool
from largemeta.core.diagnostics import ShiftErrorProbe
from largemeta.core.engine import MetaLearner
from largemeta.core.inner import INNER_OPTIMIZERS
from largemeta.core.params import Params, map_tensors
from largemeta.data.sources.datasets import looks_like_path
from largemeta.data.tasks.images import TrainQuerySampler, task_seed
from largemeta.data.tasks.loader import TaskLoader
from largemeta.data.tasks.suite import TaskSpec, load_suite, task_from_path
from largemeta.devices import resolve_device
from largemeta.errors import UserError
from largemeta.execution import EXECUTORS, GRAPH, CudaGraphMetaStep
from largemeta.models import create_model, feature_size, init_head, split_state
from largemeta.models.factory import check_body
from largemeta.models.task import ImageTask
from largemeta.phi import fit_to_body, load_weights
from largemeta.train import distributed, groups
from largemeta.train.config import META_OPTIMIZERS, TrainConfig
from largemeta.train.joint import JointLearner
from largemeta.train.layout import Layout, layout


@dataclass(frozen=True)
class Processes:
    """Where this process runs: its device, rank, the world size and the process group (None alone)."""

    device: torch.device
    rank: int
    world: int
    group: Any


def place(cfg: TrainConfig) -> Processes:
    """Pick the device (:func:`largemeta.devices.resolve_device`) and join the process group when launched by
    torchrun (WORLD_SIZE > 1)."""
    device = resolve_device(cfg.device, int(os.environ.get("RANK", "0")), what="config key 'device'")
    rank, world, group = distributed.init(device)
    return Processes(device, rank, world, group)


def select_tasks(
    specs: tuple[TaskSpec, ...], names: tuple[str, ...], what: str = "meta-train task"
) -> list[TaskSpec]:
    """The named tasks among ``specs`` (all of them when ``names`` is empty), in the order named; ``what``
    names them in the error for an unknown one."""
    if not names:
        return list(specs)
    by_name = {s.name: s for s in specs}
    # a dataset path where a task name is expected is a task of its own (a folder, an .npz)
    by_name.update({n: task_from_path(n) for n in names if n not in by_name and looks_like_path(n)})
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(
            f"unknown {what} {unknown[0]!r} (valid: {', '.join(by_name)}, or a dataset folder or .npz path)"
        )
    chosen = [by_name[n] for n in names]
    repeated = sorted({s.name for s in chosen if [c.name for c in chosen].count(s.name) > 1})
    if repeated:
        raise UserError(f"tasks {names} give two tasks the name {repeated[0]!r}: rename a folder")
    return chosen


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


def to_cpu(value: Any) -> Any:
    """Detached CPU copies of every tensor in ``value`` (what a checkpoint or another rank receives)."""
    return map_tensors(value, lambda t: t.detach().cpu().clone())


def pool_seed(seed: int) -> int:
    """The seed of a run's task draws, independent of every task's own (:func:`task_seed`)."""
    return int(np.random.SeedSequence([seed, 0x706F6F6C]).generate_state(1)[0])


@dataclass
class Run:
    """Everything a training run consists of on this rank.

    ``specs`` are all meta-train tasks of the run (every rank's), ``mine`` this rank's slots, ``tasks`` the
    tasks running in them; ``take_step()`` takes one inner step of every local slot (and whatever the
    schedule asks) and returns their losses.
    """

    cfg: TrainConfig
    processes: Processes
    specs: list[TaskSpec]
    layout: Layout
    """Which ranks run and write which slot: ``layout.mine`` are this rank's slots."""
    assignment: TaskAssignment
    """Which task runs in which slot: :class:`Static` (a fixed task list, task s in slot s) or a
    :class:`TaskPool` (``tasks_per_trajectory``, redrawn at every restart)."""
    body: nn.Module
    tasks: list[ImageTask]
    """The tasks of this rank's slots, now (the learner's own list: a pool's redraw changes it in place)."""
    learner: MetaLearner | JointLearner
    take_step: Callable[[], Tensor]
    probe: ShiftErrorProbe | None = None
    loader: TaskLoader | None = None
    data_placement: str = "device"
    """Where the task images live: ``device`` or ``stream`` (``auto`` resolved)."""

    @property
    def mine(self) -> list[int]:
        """This rank's slots (global indices; with a fixed task list, slot s runs task s)."""
        return self.layout.mine

    def log_fields(self) -> dict[str, Any]:
        """What a metrics line adds about the data: the placement and, with a pool, the active tasks and the
        draws since the last line (``{"step", "tasks"}``, the tasks in slot order)."""
        names = [s.name for s in self.specs]
        return {"data_placement": self.data_placement, **self.assignment.log_fields(names)}

    def close(self) -> None:
        """Stop what the run started outside this process's memory (streaming workers)."""
        if self.loader is not None:
            self.loader.close()


def build_run(cfg: TrainConfig, processes: Processes, saved_placement: str | None = None) -> Run:
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
    if cfg.tasks_per_trajectory:  # a pool: M slots, at least one per rank (so never task groups)
        check_pool(len(specs), cfg.tasks_per_trajectory, processes.world)
        slots, assign = cfg.tasks_per_trajectory, _task_pool
    else:  # a fixed task list: one slot per task, a pool that never redraws
        slots, assign = len(specs), _static
    lay = layout(slots, processes.rank, processes.world)  # more ranks than slots: task groups
    groups.check_config(cfg, lay, algo)

    torch.manual_seed(cfg.seed)  # the same initial φ on every rank
    body = create_model(cfg.model, in_channels=channels.pop(), width=cfg.width)
    check_body(body, cfg.model, specs[0].channels, specs[0].image_size)
    phi, buffers = split_state(body)
    if cfg.init:
        phi = initial_phi(cfg, phi)
    phi = {k: v.to(processes.device) for k, v in phi.items()}
    may_run = list(range(len(specs))) if cfg.tasks_per_trajectory else lay.mine  # a pool draws any task
    loader = task_loader(cfg, processes, [specs[p] for p in may_run], len(lay.mine), saved_placement)
    build_task = _task_builder(cfg, specs, body, buffers, processes.device, algo.uses_query, loader)
    assignment = assign(cfg, specs, lay, processes, build_task)
    tasks, heads = assignment.start()
    if len(may_run) == len(tasks):  # every task it will ever run is built: free the host copies
        loader.forget_datasets()
    task_group = groups.serve_in_groups(
        lay, body, tasks, sync_batchnorm=cfg.sync_batchnorm, timeout_s=distributed.collective_timeout_s()
    )
    inner = INNER_OPTIMIZERS.create(
        cfg.inner_optimizer, lr=cfg.inner_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    where = {"loader": loader, "data_placement": loader.data_placement}
    if algo.joint:
        learner: MetaLearner | JointLearner = JointLearner(
            phi, tasks, inner, heads, group=processes.group, reduce=task_group.mean if task_group else None
        )
        return Run(cfg, processes, specs, lay, assignment, body, tasks, learner, learner.inner_step, **where)
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
        group=processes.group,
        assignment=assignment,
        executor=executor,
    )
    take_step = CudaGraphMetaStep(learner) if cfg.executor == GRAPH else learner.inner_step
    probe = ShiftErrorProbe(learner, task=0, every=cfg.shift_error_every) if cfg.shift_error_every else None
    return Run(
        cfg, processes, specs, lay, assignment, body, learner.runner.tasks, learner, take_step, probe, **where
    )


def task_loader(
    cfg: TrainConfig,
    processes: Processes,
    specs: list[TaskSpec],
    at_once: int | None,
    before: str | None,
) -> TaskLoader:
    """The run's :class:`TaskLoader` on this rank's device (its data placement resolved there: ``auto``
    weighs the ``at_once`` largest of ``specs``, all when None; resuming, the run's own, ``before``)."""
    loader = TaskLoader(
        processes.device,
        cfg.data_placement,
        specs=specs,
        at_once=at_once,
        memory_budget_gb=cfg.memory_budget_gb,
        resumed=before,
        data_dir=cfg.data_dir or None,
        workers=cfg.stream_workers,
    )
    if loader.data_placement == "stream" and loader.why and processes.rank == 0:
        notice(f"{loader.why} by {loader.workers} worker process(es)")
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
            rng_seed=seed,
        )
        features = feature_size(body, spec.channels, spec.image_size)
        head = init_head(images.num_classes, features, torch.Generator().manual_seed(seed))
        return task, {k: v.to(device) for k, v in head.items()}

    return build


def _static(
    cfg: TrainConfig,
    specs: list[TaskSpec],
    lay: Layout,
    processes: Processes,
    build_task: Callable[[int], tuple[ImageTask, Params]],
) -> Static:
    """A fixed task list: task s in slot s; this rank builds its slots' tasks once."""
    return Static(len(specs), activate=lambda p, state: build_task(p), local=lay.mine)


def _task_pool(
    cfg: TrainConfig,
    specs: list[TaskSpec],
    lay: Layout,
    processes: Processes,
    build_task: Callable[[int], tuple[ImageTask, Params]],
) -> TaskPool:
    """The pool of every meta-train task, ``cfg.tasks_per_trajectory`` at a time (any may be drawn on any
    rank): a drawn task is built (its images loaded) when it enters a slot, its state kept on the host and
    its images released when it leaves."""
    device = processes.device

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
        for part in distributed.all_gather(leaving, processes.group):
            merged.update(part)
        return merged

    pool = TaskPool(
        len(specs),
        cfg.tasks_per_trajectory,
        seed=pool_seed(cfg.seed),
        activate=activate,
        deactivate=deactivate,
        local=lay.mine,
        exchange=exchange,
    )
    return pool
