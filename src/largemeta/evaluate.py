"""The paper's meta-test protocol: how good is an initialization on tasks it has never seen?

For each target task and seed: a fresh head, fresh BatchNorm statistics, then fine-tune *all* weights from φ
with Adam (lr 1e-3, weight decay 5e-4, batch 128), multiplying the learning rate by 0.3 at 40 %, 70 % and 90 %
of the N steps; test accuracy is measured at N/5, 2N/5, …, N. Reported: per-seed accuracies, their mean and
the half-width of a 95 % Student-t interval over seeds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from largemeta.core.inner import Adam
from largemeta.core.params import Params
from largemeta.data.datasets import load_dataset
from largemeta.data.images import TaskImages, task_seed
from largemeta.data.tasks import TaskSpec
from largemeta.errors import UserError
from largemeta.models import create_model, init_head, split_state
from largemeta.models.task import ImageTask

# two-sided 95 % Student-t quantiles t_{0.975, df} for df = 1..30 (df > 30: 1.96)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def ci95(values: list[float]) -> float:
    """Half-width of the 95 % t-interval of the mean (0 for one value)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return (_T975[n - 2] if n - 1 <= 30 else 1.96) * sd / math.sqrt(n)


def lr_at(step: int, steps: int, lr: float = 1e-3) -> float:
    """The protocol's step schedule: lr × 0.3 after each of 40 %, 70 %, 90 % of ``steps`` (0-based step)."""
    drops = sum(step >= int(round(f * steps)) for f in (0.4, 0.7, 0.9))
    return lr * 0.3**drops


@dataclass(frozen=True)
class Init:
    """A starting point: φ (None = the model's random init) and the body it belongs to."""

    name: str
    model: str
    model_kwargs: dict[str, Any]
    phi: Params | None
    seed: int = 0


def load_init(source: str, *, model: str | None = None, width: int | None = None, channels: int = 1) -> Init:
    """``scratch``, a run folder (its checkpoint's φ) or a ``.safetensors`` file written by ``largemeta export``."""
    if source == "scratch":
        name = model or "convnet"
        kwargs: dict[str, Any] = {"in_channels": channels}
        if name in ("convnet", "resnet20"):
            kwargs["width"] = width or (32 if name == "convnet" else 16)
        return Init("scratch", name, kwargs, None)
    path = Path(source)
    if path.is_dir():
        from largemeta.train import checkpoint
        from largemeta.train.trainer import CHECKPOINT

        state = checkpoint.load(path / CHECKPOINT)
        cfg, phi = state["config"], state["shared"]["phi"]
    elif path.suffix == ".safetensors" and path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise UserError(f"--init {source!r} is not a readable .safetensors file ({err})") from None
        if "config" not in meta:
            raise UserError(f"--init {source!r} has no largemeta metadata (write it with 'largemeta export')")
        cfg = json.loads(meta["config"])
        phi = tensors
    else:
        raise UserError(f"--init {source!r} is not 'scratch', a run folder or an existing .safetensors file")
    conv = next((v for v in phi.values() if v.dim() == 4), None)
    in_channels = conv.shape[1] if conv is not None else channels
    name = model or cfg["model"]
    kwargs = {"in_channels": in_channels}
    if name in ("convnet", "resnet20"):
        kwargs["width"] = width or cfg.get("width", 32)
    return Init(str(source), name, kwargs, phi, int(cfg.get("seed", 0)))


def body_and_phi(init: Init, seed: int) -> tuple[torch.nn.Module, Params, Params]:
    """The body template, φ for it (checked against its shapes), and fresh BatchNorm buffers."""
    torch.manual_seed(seed)
    body = create_model(init.model, **init.model_kwargs)
    params, buffers = split_state(body)
    if init.phi is None:
        return body, params, buffers
    for k, v in params.items():
        if k not in init.phi:
            raise UserError(f"init {init.name!r} lacks tensor {k!r} of model {init.model} (shape {tuple(v.shape)})")
        if init.phi[k].shape != v.shape:
            raise UserError(f"init {init.name!r} does not fit model {init.model}: tensor {k!r} has shape "
                            f"{tuple(init.phi[k].shape)}, the model needs {tuple(v.shape)}")
    return body, {k: init.phi[k].clone().to(v.dtype) for k in params}, buffers


@torch.no_grad()
def test_accuracy(task: ImageTask, data: TaskImages, params: Params) -> float:
    correct = total = 0
    for x, y in data.iter_eval(512):
        out = task.logits(params, x.to(task.device or x.device), train=False)
        correct += int((out.argmax(1) == y.to(out.device)).sum())
        total += len(y)
    return correct / max(total, 1)


def finetune(init: Init, data: TaskImages, *, steps: int, seed: int, batch_size: int = 128, lr: float = 1e-3,
             weight_decay: float = 5e-4, device: torch.device | str = "cpu", curve_points: int = 5) -> dict[int, float]:
    """Fine-tune φ on one target with the protocol; returns test accuracy at every steps/curve_points."""
    body, phi, buffers = body_and_phi(init, seed)  # the seed only matters for a scratch init
    device = torch.device(device)

    class _Sampler:
        def sample_train(self, batch: int):
            return data.sample_train(batch)

        sample_query = sample_train

    task = ImageTask(body, _Sampler(), classes=data.num_classes, batch_size=batch_size, buffers=buffers,
                     device=device, name=data.name)
    head = init_head(data.num_classes, task.num_features, torch.Generator().manual_seed(seed))
    params = {k: v.to(device).requires_grad_(True) for k, v in {**phi, **head}.items()}
    names = list(params)
    state = Adam(lr, weight_decay=weight_decay).init([params[k] for k in names])
    marks = {max(1, round(steps * i / curve_points)) for i in range(1, curve_points + 1)}
    curve = {}
    for step in range(steps):
        loss = task.train_loss(params)
        grads = torch.autograd.grad(loss, [params[k] for k in names])
        Adam(lr_at(step, steps, lr), weight_decay=weight_decay).step([params[k] for k in names], list(grads), state)
        if step + 1 in marks:
            curve[step + 1] = test_accuracy(task, data, params)
    return curve


def evaluate(init: Init, specs: list[TaskSpec], *, steps: int = 1000, seeds: int = 3, batch_size: int = 128,
             train_size: int | None = None, device: str | torch.device = "cpu",
             data_dir: str | None = None) -> dict[str, Any]:
    """The protocol over every target and seed; the JSON-ready result."""
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    results: dict[str, Any] = {}
    datasets: dict[str, Any] = {}
    for i, spec in enumerate(specs):
        if spec.dataset not in datasets:
            datasets[spec.dataset] = load_dataset(spec.dataset, data_dir=data_dir)
        per_seed, curves = [], []
        for s in range(seeds):
            data = TaskImages.from_arrays(spec, datasets[spec.dataset], device=device, seed=task_seed(s, i))
            if train_size is not None:
                data = data.subsample(total=train_size, seed=s)
            curve = finetune(init, data, steps=steps, seed=task_seed(1000 + s, i), batch_size=batch_size,
                             device=device)
            curves.append(curve)
            per_seed.append(curve[steps])
        mean = sum(per_seed) / len(per_seed)
        results[spec.name] = {
            "mean_accuracy": mean, "ci95": ci95(per_seed), "per_seed": per_seed,
            "curve": {str(k): sum(c[k] for c in curves) / len(curves) for k in curves[0]},
        }
    overall = sum(r["mean_accuracy"] for r in results.values()) / len(results)
    return {"init": init.name, "steps": steps, "seeds": seeds, "train_size": train_size, "tasks": results,
            "mean_accuracy": overall}
