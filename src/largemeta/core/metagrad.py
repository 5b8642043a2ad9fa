"""First-order meta-gradients behind one interface.

A :class:`MetaGradient` turns one task's (partial) inner trajectory into that task's contribution to the
meta-gradient g, with the convention that the outer optimizer descends: φ ← φ − β·g. The engine
(:mod:`largemeta.core.engine`) averages the contributions over tasks and hands g to a ``torch.optim``
optimizer. Hooks let stateful meta-gradients follow a trajectory:

* ``restart(t, phi)`` — task t starts a new trajectory at φ;
* ``observe(t, shared, loss, grads)`` — task t is at ``shared`` with training loss ``loss`` and loss gradient
  ``grads`` (called before each inner update, only when ``observes`` is true);
* ``shift(t, delta)`` — CTS moved task t's shared parameters by ``delta``;
* ``task_gradient(t, phi, params, task)`` — the contribution of task t now;
* ``task_state(t)`` / ``load_task_state(t, state)`` — what task t's trajectory has accumulated (checkpoints).

Class attributes say what a meta-gradient needs, so the algorithm table (:mod:`largemeta.core.algorithms`) and
every layer above derive their choices from them instead of from names.

All of them are O(1) in the horizon K: nothing keeps an autograd graph across inner steps.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from largemeta.core.params import Params, clone, unflatten, zeros_like
from largemeta.errors import check_positive
from largemeta.registry import Registry


class Task(Protocol):
    """What the algorithms need from a task: losses of a parameter dict on fresh minibatches."""

    def train_loss(self, params: Params) -> Tensor:
        """Loss on the next training minibatch (the inner loop's loss)."""
        ...

    def query_loss(self, params: Params) -> Tensor:
        """Loss on the next held-out/query minibatch (FOMAML's and iMAML's validation loss)."""
        ...


class MetaGradient:
    """Base class: stateless hooks; subclasses implement :meth:`task_gradient`."""

    name = "base"
    observes = False
    """Does :meth:`observe` need to be called at every inner step?"""
    supports_cts = True
    """Is the gradient defined along a running trajectory (so CTS can take it at every step)?"""
    before_inner_step = False
    """Is the meta-update taken after a step's gradients and before its inner optimizer step (instead of
    after)?"""
    uses_query = False
    """Does :meth:`task_gradient` read held-out query batches (``task.query_loss``)?"""
    uses_parameters_only = False
    """Does :meth:`task_gradient` need nothing but φ and θ_t (no losses, no hooks): usable over a user's own
    loop?"""
    graphable = False
    """Is it pure device work (no host-side values), so a CUDA graph can capture it?"""
    elementwise = False
    """Does a batch of independent problems stacked in one tensor stay independent (no norms over the
    batch)?"""
    splits_over_ranks = True
    """Does :meth:`task_gradient` stay right when a task's batch is split over a group of ranks (each rank
    then sees its slice)?"""
    why_not_split = ""
    """When it does not: why, in words (for the one-line refusal)."""

    def restart(self, t: int, phi: Params) -> None:
        pass

    def observe(self, t: int, shared: Params, loss: Tensor, grads: Params) -> None:
        pass

    def shift(self, t: int, delta: Params) -> None:
        pass

    def regularizer(self, phi: Params, shared: Params) -> Tensor | None:
        """Extra term for the inner loss (iMAML's proximal term); ``None`` for none."""
        return None

    def task_gradient(self, t: int, phi: Params, params: Params, task: Task) -> Params:
        raise NotImplementedError

    def task_state(self, t: int) -> dict[str, Any]:
        """What task t's trajectory has accumulated so far (live tensors; the caller copies)."""
        return {}

    def load_task_state(self, t: int, state: dict[str, Any]) -> None:
        pass


def _loss_grad(loss_fn, params: Params, keys: list[str]) -> Params:
    """Gradient of ``loss_fn(params)`` w.r.t. ``params[k]`` for k in ``keys`` (no graph kept)."""
    live = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    loss = loss_fn(live)
    grads = torch.autograd.grad(loss, [live[k] for k in keys])
    return dict(zip(keys, grads, strict=True))


class Reptile(MetaGradient):
    """Reptile (Nichol et al. 2018): g_t = φ − θ_t, the displacement of the task's trajectory so far."""

    name = "reptile"
    uses_parameters_only = graphable = elementwise = True

    def task_gradient(self, t: int, phi: Params, params: Params, task: Task) -> Params:
        keys = list(phi)
        return dict(
            zip(
                keys,
                torch._foreach_sub([phi[k] for k in keys], [params[k].detach() for k in keys]),
                strict=True,
            )
        )


class FOMAML(MetaGradient):
    """First-order MAML (Finn et al. 2017): g_t = ∇L_query(θ_t), the query-loss gradient at the current
    θ_t."""

    name = "fomaml"
    uses_query = graphable = elementwise = True

    def task_gradient(self, t: int, phi: Params, params: Params, task: Task) -> Params:
        return _loss_grad(task.query_loss, params, list(phi))


class PreStepFOMAML(MetaGradient):
    """FOMAML as the paper's public reference code applies CTS to it: g_t = ∇L_train(θ_t), the gradient of the
    step's own *training* minibatch at the pre-step θ_t (the gradient the inner step then uses, without its
    weight decay). The meta-update and the CTS shift come *between* computing that gradient and the inner
    optimizer step, which then applies the (pre-shift) gradient at the shifted θ_t (weight decay there).

    :class:`FOMAML` is FOMAML as defined: a held-out query batch, after the inner step. With the official
    ordering the two codes agree to float rounding (checked against the reference code when this class was
    written; that code is not shipped).
    """

    name = "fomaml-pre-step"
    observes = before_inner_step = graphable = elementwise = True

    def __init__(self) -> None:
        self.grads: dict[int, Params] = {}

    def observe(self, t: int, shared: Params, loss: Tensor, grads: Params) -> None:
        self.grads[t] = grads  # this step's only: taken by task_gradient before the inner step

    def task_gradient(self, t: int, phi: Params, params: Params, task: Task) -> Params:
        return self.grads[t]


class Leap(MetaGradient):
    """Leap (Flennerhag et al. 2019): the gradient of the trajectory's path length in (θ, loss) space.

    Over the trajectory θ_0 = φ, θ_1, …, with losses ℓ_k = ℓ(θ_k), it accumulates

        g_t = Σ_k [θ_{k−1} − θ_k − Δℓ_k ∇ℓ(θ_{k−1})] / ‖(θ_k − θ_{k−1}, Δℓ_k)‖,   Δℓ_k = ℓ_k − ℓ_{k−1},

    the first-order gradient w.r.t. φ of Σ_k ‖(θ_k, ℓ_k) − (θ_{k−1}, ℓ_{k−1})‖ with the Jacobians
    ∂θ_k/∂φ taken as I. ``loss_term=False`` drops Δℓ (a pure Euclidean path); ``norm=False`` sums
    unnormalised increments; the ``stabilizer`` makes every Δℓ_k ≤ 0 (Leap's guard against a path
    gradient that pulls φ towards loss increases). An increment is added when the next point's loss is
    observed, so the segment into the current point is counted one step later.
    """

    name = "leap"
    observes = True

    def __init__(
        self, loss_term: bool = True, norm: bool = True, stabilizer: bool = True, eps: float = 1e-12
    ):
        self.loss_term, self.norm, self.stabilizer, self.eps = loss_term, norm, stabilizer, eps
        self.acc: dict[int, Params] = {}
        self.prev: dict[int, tuple[Params, float, Params]] = {}

    def restart(self, t: int, phi: Params) -> None:
        self.acc[t] = zeros_like(phi)
        self.prev.pop(t, None)

    @torch.no_grad()
    def observe(self, t: int, shared: Params, loss: Tensor, grads: Params) -> None:
        loss_value = float(loss)
        if t in self.prev:
            theta_prev, loss_prev, grad_prev = self.prev[t]
            d_theta = {k: shared[k] - theta_prev[k] for k in shared}
            d_loss = loss_value - loss_prev if self.loss_term else 0.0
            if self.stabilizer and d_loss > 0:
                d_loss = -d_loss
            scale = 1.0
            if self.norm:
                length = sum(float(d.double().pow(2).sum()) for d in d_theta.values()) + d_loss**2
                scale = 1.0 / max(length**0.5, self.eps)
            for k, acc in self.acc[t].items():
                acc.add_(d_theta[k], alpha=-scale)
                if d_loss:
                    acc.add_(grad_prev[k], alpha=-d_loss * scale)
        self.prev[t] = (clone(shared), loss_value, clone(grads))

    @torch.no_grad()
    def shift(self, t: int, delta: Params) -> None:
        # The stored previous point moves with the trajectory, so the shift is not counted as path length.
        if t in self.prev:
            for k, d in delta.items():
                self.prev[t][0][k].add_(d)

    def task_gradient(self, t: int, phi: Params, params: Params, task: Task) -> Params:
        return {k: v.clone() for k, v in self.acc[t].items()}

    def task_state(self, t: int) -> dict[str, Any]:
        # "prev" is absent right after a restart (no point observed yet on the new trajectory)
        return {"acc": self.acc[t], **({"prev": self.prev[t]} if t in self.prev else {})}

    def load_task_state(self, t: int, state: dict[str, Any]) -> None:
        self.acc[t] = {k: v.clone() for k, v in state["acc"].items()}
        if "prev" in state:
            theta, loss, grads = state["prev"]
            self.prev[t] = (clone(theta), float(loss), clone(grads))
        else:
            self.prev.pop(t, None)


def conjugate_gradient(matvec, b: Tensor, iters: int = 10, tol: float = 1e-10) -> Tensor:
    """Solve A x = b for symmetric positive-definite A given only ``matvec(v) = A v`` (x_0 = 0).

    Args:
        matvec (Callable[[Tensor], Tensor]): ``v -> A v`` for a vector ``v`` of shape (P,).
        b: the right-hand side, shape (P,).
        iters: at most this many iterations.
        tol: stop when the squared residual norm falls below this.

    Returns:
        x, shape (P,).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r.dot(r)
    for _ in range(iters):
        if rs.sqrt() <= tol:
            break
        ap = matvec(p)
        alpha = rs / p.dot(ap)
        x.add_(p, alpha=float(alpha))
        r.sub_(ap, alpha=float(alpha))
        rs_new = r.dot(r)
        p.mul_(rs_new / rs).add_(r)
        rs = rs_new
    return x


class IMAML(MetaGradient):
    """Implicit MAML (Rajeswaran et al. 2019): g_t solves (I + H/λ) x = ∇L_query(θ_t) by conjugate gradient.

    H is the Hessian of the training loss at θ_t w.r.t. the shared parameters, used only through
    Hessian-vector products on one training minibatch. With ``proximal=True`` the inner loss carries iMAML's
    proximal term λ/2 ‖θ − φ‖² (the paper's large-scale reference code trains without it, the default).
    iMAML's implicit gradient is defined at the end of a trajectory only, so it has no CTS form.
    """

    name = "imaml"
    supports_cts = False
    uses_query = True
    splits_over_ranks = False
    why_not_split = "solves by conjugate gradient with one rank's Hessian-vector products"

    def __init__(self, lam: float = 0.5, cg_steps: int = 10, proximal: bool = False):
        check_positive("iMAML lambda", lam)
        check_positive("iMAML CG steps", cg_steps, integer=True)
        self.lam, self.cg_steps, self.proximal = lam, cg_steps, proximal

    def regularizer(self, phi: Params, shared: Params) -> Tensor | None:
        if not self.proximal:
            return None
        return 0.5 * self.lam * sum((shared[k] - phi[k]).pow(2).sum() for k in phi)

    def task_gradient(self, t: int, phi: Params, params: Params, task: Task) -> Params:
        keys = list(phi)
        v = _loss_grad(task.query_loss, params, keys)
        b = torch.cat([v[k].reshape(-1) for k in keys])
        live = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        grads = torch.autograd.grad(task.train_loss(live), [live[k] for k in keys], create_graph=True)
        flat_grad = torch.cat([g.reshape(-1) for g in grads])

        def matvec(x: Tensor) -> Tensor:
            hvp = torch.autograd.grad(flat_grad, [live[k] for k in keys], grad_outputs=x, retain_graph=True)
            return x + torch.cat([h.reshape(-1) for h in hvp]) / self.lam

        x = conjugate_gradient(matvec, b, self.cg_steps)
        return {k: v.detach() for k, v in unflatten(x, {k: phi[k] for k in keys}).items()}


META_GRADIENTS: Registry[type[MetaGradient]] = Registry("meta-gradient")
"""Meta-gradient classes by name; ``META_GRADIENTS.create(name, **options)`` passes the options each one
takes."""
for _cls in (Reptile, FOMAML, PreStepFOMAML, Leap, IMAML):
    META_GRADIENTS.add(_cls.name, _cls)
