"""Building a training run from its config: where it runs, its tasks, its learner and how a step executes.

:func:`place` joins the process group (under torchrun) and picks the device; :func:`build_run` loads this
rank's share of the suite's meta-train tasks, creates the body, φ and the heads, and wires the learner the
algorithm table asks for (:mod:`largemeta.core.algorithms`) with the configured executor. Nothing here writes
files or runs a step: the trainer (:mod:`largemeta.train.trainer`) does both.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from largemeta.core.algorithms import ALGORITHMS
from largemeta.core.diagnostics import ShiftErrorProbe
from largemeta.core.engine import MetaLearner
from largemeta.core.inner import INNER_OPTIMIZERS
from largemeta.core.params import Params
from largemeta.data.images import Datasets, TrainQuerySampler, task_seed
from largemeta.data.tasks import TaskSpec, load_suite
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


def resolve_device(name: str, rank: int = 0) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available) → the device (``cuda`` picks
    LOCAL_RANK's)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available here (valid: cpu, auto)")
        if name == "cuda":
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


def place(cfg: TrainConfig) -> Placement:
    """Pick the device and join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    device = resolve_device(cfg.device, int(os.environ.get("RANK", "0")))
    rank, world, group = distributed.init(device)
    return Placement(device, rank, world, group)


def select_tasks(specs: tuple[TaskSpec, ...], names: tuple[str, ...]) -> list[TaskSpec]:
    """The named tasks among ``specs`` (all of them when ``names`` is empty), in the order named."""
    if not names:
        return list(specs)
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"unknown meta-train task {unknown[0]!r} (valid: {', '.join(by_name)})")
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
    layout: groups.Layout | None = None
    """Which ranks serve which task (None: each task on one rank)."""


def build_run(cfg: TrainConfig, placement: Placement) -> Run:
    """Build this rank's part of the run ``cfg`` describes (no file is read but the data and ``cfg.init``)."""
    suite = load_suite(cfg.suite)
    specs = select_tasks(suite.meta_train, cfg.tasks)
    if not specs:
        raise UserError(f"suite {cfg.suite!r} has no meta-train tasks")
    channels = {s.channels for s in specs}
    if len(channels) != 1:
        raise UserError(f"meta-train tasks mix {sorted(channels)} input channels; one model needs one count")
    lay = groups.layout(len(specs), placement.rank, placement.world)  # more ranks than tasks: task groups
    mine = lay.mine
    algo = ALGORITHMS.get(cfg.algo)
    groups.check_config(cfg, lay, algo.meta_gradient)

    torch.manual_seed(cfg.seed)  # the same initial φ on every rank
    body = create_model(cfg.model, in_channels=channels.pop(), width=cfg.width)
    phi, buffers = split_state(body)
    if cfg.init:
        phi = initial_phi(cfg, phi)
    phi = {k: v.to(placement.device) for k, v in phi.items()}
    tasks, heads = _build_tasks(cfg, specs, mine, body, buffers, placement.device, algo.uses_query)
    task_group = groups.serve_in_groups(
        lay, body, tasks, sync_batchnorm=cfg.sync_batchnorm, timeout_s=distributed.TIMEOUT_S
    )
    inner = INNER_OPTIMIZERS.create(
        cfg.inner_optimizer, lr=cfg.inner_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    if algo.joint:
        learner: MetaLearner | JointLearner = JointLearner(
            phi, tasks, inner, heads, group=placement.group, reduce=task_group.mean if task_group else None
        )
        return Run(cfg, placement, specs, mine, body, tasks, learner, learner.inner_step, layout=lay)
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
    take_step = CudaGraphMetaStep(learner) if cfg.executor == GRAPH else learner.inner_step
    probe = ShiftErrorProbe(learner, task=0, every=cfg.shift_error_every) if cfg.shift_error_every else None
    return Run(cfg, placement, specs, mine, body, tasks, learner, take_step, probe, layout=lay)


def _build_tasks(
    cfg: TrainConfig,
    specs: list[TaskSpec],
    mine: list[int],
    body: nn.Module,
    buffers: Params,
    device: torch.device,
    uses_query: bool,
) -> tuple[list[ImageTask], list[Params]]:
    datasets = Datasets(data_dir=cfg.data_dir or None)
    tasks, heads = [], []
    for gi in mine:
        spec = specs[gi]
        seed = task_seed(cfg.seed, gi)
        images = datasets.task_images(spec, device=device, seed=seed)
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
        tasks.append(task)
        heads.append({k: v.to(device) for k, v in head.items()})
    return tasks, heads
