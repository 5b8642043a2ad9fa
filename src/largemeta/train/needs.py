"""What a run needs, worked out before its first step: datasets, decoded images, parameters, memory, hours.

Used by ``largemeta train --dry-run`` (:mod:`largemeta.train.dry_run`); nothing here downloads or decodes a
dataset.

* **Datasets**: every dataset the suite names (meta-train and meta-test), whether it is in the cache, its
  download size where its registry entry knows it, and its sources in the order they are tried.
* **Decoded size per task**: images x channels x size² bytes (uint8, as the images are held). Exact when the
  dataset is cached (its labels are counted); otherwise estimated from the registry's image count times the
  task's share of the classes (marked ``estimated``).
* **Where the images live**: ``data_placement`` as the run would decide it: ``device``, ``stream``, or for
  ``auto`` device when the meta-train tasks' decoded images fit ``memory_budget_gb`` (else half the free
  memory of the device), stream otherwise.
* **Parameters**: the body built on PyTorch's ``meta`` device (shapes only, no memory), plus each task's
  linear head (classes x features + classes).
* **Peak memory per device**, an estimate for 1, 2, 4, 8 ... devices (the world sizes the task count allows;
  tasks dealt round-robin over ranks, as :mod:`largemeta.train.layout` deals them), in fp32 bytes:
  ``3 P`` (φ, its meta-gradient, the meta-optimizer's state) + for each task on the device ``3 (P + H_t)``
  (θ, the inner optimizer's momentum, the gradient) + the activations one inner step keeps for the backward
  pass (the sum of every module's output, measured by forward hooks on the ``meta`` device at
  ``batch_size`` and the device's largest task image; halved by G when G ranks share a task) + the decoded
  images of the device's tasks under device placement. Not modelled: the allocator's slack, cuDNN
  workspaces, autocast (which lowers the activations), the evaluation batches.
* **Hours per GPU count** (``--measure``): a short warm-up on the current device — for every distinct
  (channels, image size) of the meta-train tasks, the body and a head take ``warmup`` untimed then ``timed``
  timed inner steps (forward, backward, SGD with momentum) on random images of the task's shape at
  ``batch_size`` (the time of a step does not depend on the pixels); the median is kept. On CUDA the steps
  use the config's executor's channels-last and bf16 autocast and are synchronised; elsewhere fp32. One run
  step is one inner step of every task, so with W devices a step takes the largest sum of its tasks' step
  times over the ranks (divided by G when G ranks share a task), and ``hours(W) = steps x that / 3600``.
  Not included: meta-updates, evaluation, checkpoints, data loading, and the communication between ranks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from largemeta.data.sources.datasets import DATASETS, is_cached, looks_like_path, read_cached
from largemeta.data.sources.hub import download_bytes
from largemeta.data.store.cache import data_dir
from largemeta.data.store.cached import Damaged
from largemeta.data.tasks.suite import Suite, TaskSpec
from largemeta.errors import UserError
from largemeta.models import create_model, feature_size
from largemeta.train.config import TrainConfig

FP32 = 4


def datasets(cfg: TrainConfig, suite: Suite) -> list[dict[str, Any]]:
    """One row per dataset the suite names: cached or not, download size, sources, roles."""
    cache = data_dir(cfg.data_dir or None)
    rows: dict[str, dict[str, Any]] = {}
    for role, tasks in (("meta-train", suite.meta_train), ("meta-test", suite.meta_test)):
        for t in tasks:
            row = rows.get(t.dataset)
            if row is None:
                row = rows[t.dataset] = _dataset_row(t.dataset, cache)
            if role not in row["roles"]:
                row["roles"].append(role)
    return list(rows.values())


def _dataset_row(name: str, cache: Path) -> dict[str, Any]:
    if name not in DATASETS and looks_like_path(name):
        return {"name": name, "cached": Path(name).expanduser().exists(), "download_mb": None,
                "sources": ["path"], "roles": []}  # fmt: skip
    spec = DATASETS.get(name)
    hub = download_bytes(spec.sources)
    mb = spec.download_mb if spec.download_mb is not None else (hub / 1e6 if hub else None)
    return {"name": name, "cached": is_cached(name, cache), "download_mb": mb,
            "sources": spec.source_names(), "roles": []}  # fmt: skip


def task_images(cfg: TrainConfig, specs: Sequence[TaskSpec]) -> list[dict[str, Any]]:
    """Images and decoded bytes of each task (exact from a cached dataset's labels, else estimated)."""
    cache = data_dir(cfg.data_dir or None)
    out = []
    for s in specs:
        count, exact = _count(s, cache)
        out.append({
            "task": s.name, "dataset": s.dataset, "images": count, "exact": exact,
            "decoded_bytes": None if count is None else count * s.channels * s.image_size**2,
        })  # fmt: skip
    return out


def _count(s: TaskSpec, cache: Path) -> tuple[int | None, bool]:
    if s.dataset not in DATASETS:
        return None, False  # a path: the dry run's data check (or the run) counts it
    try:
        ds = read_cached(s.dataset, cache)
    except Damaged:
        ds = None
    if ds is not None:
        splits = {"train": ds.y_train, "test": ds.y_test}
        n = sum(len(s.select(ds.class_names, splits[k])[0]) for k in (s.train_split, s.eval_split))
        return n, True
    spec = DATASETS.get(s.dataset)
    if not spec.num_images:
        return None, False
    try:
        share = len(s.resolve_classes([str(i) for i in range(spec.num_classes)])) / spec.num_classes
    except UserError:  # classes given by name: the names are known once the dataset is there
        share = 1.0
    return round(spec.num_images * share), False


def _on_meta(cfg: TrainConfig, channels: int) -> nn.Module:
    with torch.device("meta"):
        return create_model(cfg.model, in_channels=channels, width=cfg.width)


def activation_bytes(body: nn.Module, channels: int, size: int, batch: int) -> int | None:
    """fp32 bytes of every module's output for one forward pass of ``batch`` images (shapes only, on the
    ``meta`` device); None when the body cannot run there."""
    total = 0

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        for o in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(o, torch.Tensor):
                total += o.numel() * FP32

    handles = [m.register_forward_hook(hook) for m in body.modules() if m is not body]
    try:
        body(torch.empty(batch, channels, size, size, device="meta"))
    except Exception:  # a custom body that needs real tensors
        return None
    finally:
        for h in handles:
            h.remove()
    return total


def world_sizes(tasks: int, most: int = 8) -> list[int]:
    """1, 2, 4, 8 ... up to ``most``, those that can serve ``tasks`` tasks (≤ tasks, or a multiple)."""
    sizes, w = [], 1
    while w <= max(most, tasks):
        if w <= tasks or w % tasks == 0:
            sizes.append(w)
        w *= 2
    return [w for w in sizes if w <= most]


def _ranks(n: int, world: int) -> list[list[int]]:
    """The task indices of each rank (round-robin; with more ranks than tasks, one task per group)."""
    if world <= n:
        return [list(range(r, n, world)) for r in range(world)]
    return [[r // (world // n)] for r in range(world)]


def model_and_memory(
    cfg: TrainConfig, specs: Sequence[TaskSpec], sizes: Sequence[dict[str, Any]], placement: str
) -> dict[str, Any]:
    """Parameters and the per-device peak memory estimate (see the module docstring)."""
    channels = specs[0].channels
    body = _on_meta(cfg, channels)
    p = sum(v.numel() for v in body.parameters())
    features = getattr(body, "num_features", None)
    heads = []
    for s in specs:
        classes = len(s.resolve_classes([str(i) for i in range(_classes(s))])) if _classes(s) else None
        heads.append(classes * features + classes if classes and features else 0)
    act = {s.image_size: activation_bytes(body, channels, s.image_size, cfg.batch_size) for s in specs}
    peaks = {}
    for world in world_sizes(len(specs)):
        group = world // len(specs) if world > len(specs) else 1
        worst = 0
        for mine in _ranks(len(specs), world):
            state = 3 * p * FP32 + sum(3 * (p + heads[i]) * FP32 for i in mine)
            a = max((act[specs[i].image_size] or 0) for i in mine) // group
            images = sum(sizes[i]["decoded_bytes"] or 0 for i in mine) if placement == "device" else 0
            worst = max(worst, state + a + images)
        peaks[str(world)] = worst
    return {
        "body_parameters": p,
        "head_parameters": heads,
        "activation_bytes": {str(k): v for k, v in act.items()},
        "peak_bytes_per_device": peaks,
    }


def _classes(s: TaskSpec) -> int | None:
    return DATASETS.get(s.dataset).num_classes if s.dataset in DATASETS else None


def measure(
    cfg: TrainConfig, specs: Sequence[TaskSpec], device: torch.device, warmup: int = 2, timed: int = 3
) -> dict[str, Any]:
    """Seconds per inner step of each task's shape on ``device`` and hours per device count."""
    per_shape: dict[tuple[int, int], float] = {}
    peak = 0
    for s in specs:
        key = (s.channels, s.image_size)
        if key in per_shape:
            continue
        per_shape[key], used = _time_steps(cfg, s, device, warmup, timed)
        peak = max(peak, used)
    step = [per_shape[(s.channels, s.image_size)] for s in specs]
    hours = {}
    for world in world_sizes(len(specs)):
        group = world // len(specs) if world > len(specs) else 1
        slowest = max(sum(step[i] for i in mine) / group for mine in _ranks(len(specs), world))
        hours[str(world)] = cfg.steps * slowest / 3600
    return {
        "device": str(device),
        "precision": precision(cfg, device),
        "warmup_steps": warmup,
        "timed_steps": timed,
        "seconds_per_step": {f"{c}x{size}px": t for (c, size), t in per_shape.items()},
        "measured_peak_bytes": peak if device.type == "cuda" else None,
        "hours": hours,
    }


def _time_steps(cfg: TrainConfig, s: TaskSpec, device: torch.device, warmup: int, timed: int):
    torch.manual_seed(cfg.seed)
    body = create_model(cfg.model, in_channels=s.channels, width=cfg.width)
    classes = _classes(s) or 10
    head = nn.Linear(feature_size(body, s.channels, s.image_size), classes)
    model = nn.Sequential(body, nn.Flatten(), head).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.inner_lr, momentum=cfg.momentum)
    x = torch.randn(cfg.batch_size, s.channels, s.image_size, s.image_size, device=device)
    y = torch.randint(0, classes, (cfg.batch_size,), device=device)
    cuda = device.type == "cuda"
    fast = _cuda_executor(cfg) if cuda else (False, False)
    if fast[0]:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + timed):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=fast[1], cache_enabled=False):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    used = torch.cuda.max_memory_allocated(device) if cuda else 0
    return sorted(times)[len(times) // 2], used


def _cuda_executor(cfg: TrainConfig) -> tuple[bool, bool]:
    """(channels-last, bf16 autocast) as the run's executor uses them on CUDA."""
    parts = set(cfg.executor.split("+"))
    return "channels_last" in parts, "autocast" in parts


def precision(cfg: TrainConfig, device: torch.device) -> str:
    """How the warm-up ran: the executor's channels-last and bf16 autocast on CUDA, plain fp32 elsewhere."""
    if device.type != "cuda":
        return "fp32"
    cl, ac = _cuda_executor(cfg)
    return "+".join([*(["channels_last"] if cl else []), "bf16 autocast" if ac else "fp32"])


def gb(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def hours_text(h: float) -> str:
    return f"{h:.1f} h" if h >= 1 else f"{h * 60:.0f} min" if h * 60 >= 1 else f"{math.ceil(h * 3600)} s"
