"""Per-task inner optimizers as ``init``/``step`` pairs over lists of tensors (optax-style, in place).

Each task keeps its own optimizer *state* (a plain dict of tensors and counters, easy to checkpoint and to
reset at a trajectory restart); the optimizer object itself only holds hyper-parameters. Both optimizers are
numerically equal to ``torch.optim.SGD`` / ``torch.optim.Adam`` (tests compare them step by step). Weight
decay is L2 added to the gradient, as in ``torch.optim`` (not AdamW).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from largemeta.errors import UserError, check_positive
from largemeta.registry import Registry

State = dict[str, Any]


@dataclass(frozen=True)
class SGD:
    """SGD with optional momentum, dampening, Nesterov momentum and L2 weight decay (=
    ``torch.optim.SGD``)."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_positive("inner learning rate", self.lr)
        if not 0.0 <= self.momentum < 1.0:
            raise UserError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise UserError(f"weight decay must be >= 0, got {self.weight_decay!r}")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise UserError("Nesterov momentum needs momentum > 0 and dampening = 0")

    def init(self, params: list[Tensor]) -> State:
        return {"step": 0, "momentum_buffer": None}

    @torch.no_grad()
    def step(self, params: list[Tensor], grads: list[Tensor], state: State) -> None:
        d_p = list(grads)
        if self.weight_decay:
            d_p = torch._foreach_add(d_p, params, alpha=self.weight_decay)
        if self.momentum:
            buf = state["momentum_buffer"]
            if buf is None:
                buf = state["momentum_buffer"] = [g.detach().clone() for g in d_p]
            else:
                torch._foreach_mul_(buf, self.momentum)
                torch._foreach_add_(buf, d_p, alpha=1 - self.dampening)
            d_p = torch._foreach_add(d_p, buf, alpha=self.momentum) if self.nesterov else buf
        torch._foreach_add_(params, d_p, alpha=-self.lr)
        state["step"] += 1


@dataclass(frozen=True)
class Adam:
    """Adam with L2 weight decay (= ``torch.optim.Adam`` without amsgrad)."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_positive("inner learning rate", self.lr)
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise UserError(f"Adam betas must be in [0, 1), got {self.betas!r}")
        if self.weight_decay < 0:
            raise UserError(f"weight decay must be >= 0, got {self.weight_decay!r}")

    def init(self, params: list[Tensor]) -> State:
        return {
            "step": 0,
            "exp_avg": [torch.zeros_like(p) for p in params],
            "exp_avg_sq": [torch.zeros_like(p) for p in params],
        }

    @torch.no_grad()
    def step(self, params: list[Tensor], grads: list[Tensor], state: State) -> None:
        beta1, beta2 = self.betas
        state["step"] += 1
        t = state["step"]
        g = list(grads)
        if self.weight_decay:
            g = torch._foreach_add(g, params, alpha=self.weight_decay)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        torch._foreach_lerp_(m, g, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=1 - beta2)
        step_size = self.lr / (1 - beta1**t)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(1 - beta2**t))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, m, denom, value=-step_size)


InnerOptimizer = SGD | Adam

INNER_OPTIMIZERS: Registry[type] = Registry("inner optimizer")
"""Inner optimizers by name; ``INNER_OPTIMIZERS.create(name, lr=..., momentum=..., weight_decay=...)`` passes
the options each one takes (``sgd`` has no momentum, ``adam`` none either)."""


@INNER_OPTIMIZERS.register("sgd")
def _sgd(lr: float, weight_decay: float = 0.0) -> SGD:
    """Plain SGD (no momentum)."""
    return SGD(lr, weight_decay=weight_decay)


@INNER_OPTIMIZERS.register("sgdm")
def _sgdm(lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> SGD:
    """SGD with heavy-ball momentum (the paper's)."""
    return SGD(lr, momentum=momentum, weight_decay=weight_decay)


@INNER_OPTIMIZERS.register("nesterov")
def _nesterov(lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> SGD:
    """SGD with Nesterov momentum."""
    return SGD(lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


@INNER_OPTIMIZERS.register("adam")
def _adam(lr: float, weight_decay: float = 0.0) -> Adam:
    """Adam with L2 weight decay."""
    return Adam(lr, weight_decay=weight_decay)
