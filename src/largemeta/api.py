"""Continual Trajectory Shifting as a drop-in for your own training loop.

Wrap your model(s) the way DDP or an EMA helper wraps them; your loop stays ``loss.backward(); opt.step();
cts.step()``. Every model is one task (Shin et al., "Large-Scale Meta-Learning with Continual Trajectory
Shifting", ICML 2021, §2): its *shared* parameters are meta-learned into φ, the rest (the head) stays the
task's own. One task per process under ``torchrun`` (the paper's setup), several models in one process, or
both. The updates are those of :class:`largemeta.core.MetaController`, which this class drives over your live
parameters — the same controller the CLI's engine uses, not a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from largemeta.core.algorithms import ALGORITHMS
from largemeta.core.controller import MetaController
from largemeta.core.params import Params, clone, flatten, unflatten
from largemeta.errors import UserError, check_positive, choice_error

SharedRule = Callable[[str, nn.Parameter], bool]
DROP_IN_ALGORITHMS = tuple(a for a in ALGORITHMS if ALGORITHMS.get(a).drop_in)
"""Algorithms whose meta-gradient needs nothing from the user's loop but φ and θ_t (Reptile-based)."""


def head_names(model: nn.Module) -> set[str]:
    """Names of the parameters of ``model``'s last ``nn.Linear`` (in registration order): the default head."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(
            f"{type(model).__name__} has no nn.Linear to take as its head; pass shared= to say which "
            f"parameters are meta-learned, e.g. {SHARED_EXAMPLE}"
        )
    name, head = linears[-1]
    return {f"{name}.{p}" if name else p for p, _ in head.named_parameters(recurse=False)}


def _not_in(names: set[str]) -> SharedRule:
    return lambda name, param: name not in names


SHARED_EXAMPLE = "shared=lambda name, param: not name.startswith('head.')"
"""How to pick the meta-learned parameters, as the errors show it."""

Shapes = dict[str, tuple[int, ...]]


def _check_same(ref: Shapes, other: Shapes, ref_where: str, where: str) -> None:
    """UserError naming the first shared parameter of ``ref`` that ``other`` lacks or shapes differently."""
    for name, shape in ref.items():
        if name not in other:
            raise UserError(f"shared parameter {name!r} of {ref_where} is missing from {where}")
        if other[name] != shape:
            raise UserError(
                f"shared parameter {name!r} has shape {shape} in {ref_where} but {other[name]} in {where}"
            )


def _rank0_shapes(mine: Shapes, group: Any) -> Shapes:
    """Rank 0's shared names and shapes, in its order, after checking that every rank has the same ones.

    Compared before any tensor is sent, so a mismatch is the same clear error on every rank rather than a
    hang or a silently mixed-up φ; rank 0's order makes every rank flatten φ the same way.
    """
    everyone: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    for r, theirs in enumerate(everyone[1:], start=1):
        _check_same(everyone[0], theirs, "rank 0", f"rank {r}")
        _check_same(theirs, everyone[0], f"rank {r}", "rank 0")
    return everyone[0]


class ContinualTrajectoryShifting:
    """CTS (or plain Reptile) over models trained by your own loop; call :meth:`step` after ``opt.step()``.

    At construction φ is taken from the shared parameters of the first model (of rank 0 when distributed:
    broadcast, shared parameters only — heads may differ in shape between tasks) and copied into every model.
    Each :meth:`step` counts one inner step of every model in this process; then, as in the paper's loop,
    every ``meta_every`` steps φ moves by the meta optimizer along g = mean_t (φ − θ_t) and (CTS) every
    model's shared parameters move by the same φ' − φ; every ``k`` steps they restart from φ. Heads are never
    touched.

    Args:
        models: one task's model, or one per task (same shared parameter names and shapes).
        shared: ``shared(name, param) -> bool`` picks the meta-learned parameters. Default: every parameter
            except the weight and bias of the model's last ``nn.Linear`` module (:func:`head_names`).
        meta_optimizer: a factory ``params -> torch.optim.Optimizer`` for φ (φ does not exist before the
            wrapper, so pass e.g. ``functools.partial(torch.optim.Adam, lr=1e-3)``); default ``SGD(meta_lr)``.
        meta_lr: β of the default meta optimizer (paper: 0.01).
        k: horizon K: inner steps before every trajectory restarts from φ (paper: 1000).
        meta_every: inner steps between meta-updates for ``cts`` (paper: 1); ``reptile`` uses K.
        algorithm: ``"cts"`` (CTS on Reptile, the paper's headline), ``"reptile"`` (one meta-update per K
            steps, no shift), or any other name of :data:`DROP_IN_ALGORITHMS`. FOMAML/Leap need losses and
            gradients from inside the loop: use the CLI engine.
        process_group: the group whose ranks hold the other tasks; ``None`` means the default group when
            ``torch.distributed`` is initialized with more than one process, else no communication.
        inner_optimizers: your ``torch.optim`` optimizers, needed only for ``reset_inner_state``.
            Do not wrap the models in ``DistributedDataParallel``: tasks must train independently, and it
            would average their gradients.
        reset_inner_state: clear ``inner_optimizers``' state (momentum, Adam moments) at every restart, as the
            paper's synthetic code re-creates its optimizer; by default state is kept (its image code).

    Example::

        cts = ContinualTrajectoryShifting(models, k=1000, meta_lr=0.01)
        for x, y in loader:
            for model, opt in zip(models, opts):
                opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
            cts.step()
        cts.save("phi.safetensors", prefix="body.", body="convnet", width=32)  # evaluate --init takes it
    """

    def __init__(
        self,
        models: nn.Module | Sequence[nn.Module],
        *,
        shared: SharedRule | None = None,
        meta_optimizer: Callable[[list[Tensor]], torch.optim.Optimizer] | None = None,
        meta_lr: float = 0.01,
        k: int = 1000,
        meta_every: int = 1,
        algorithm: str = "cts",
        process_group: Any = None,
        inner_optimizers: Sequence[torch.optim.Optimizer] | None = None,
        reset_inner_state: bool = False,
    ) -> None:
        self.models = [models] if isinstance(models, nn.Module) else list(models)
        if not self.models:
            raise UserError("ContinualTrajectoryShifting needs at least one model")
        if algorithm not in DROP_IN_ALGORITHMS:
            raise choice_error("drop-in algorithm", algorithm, DROP_IN_ALGORITHMS)
        check_positive("k (inner steps per trajectory)", k, integer=True)
        if isinstance(meta_optimizer, torch.optim.Optimizer):
            raise UserError("meta_optimizer must be a factory: functools.partial(torch.optim.SGD, lr=0.01)")
        if reset_inner_state and inner_optimizers is None:
            raise UserError("reset_inner_state=True needs inner_optimizers= (the optimizers to reset)")
        spec = ALGORITHMS.get(algorithm)
        if not spec.cts and meta_every != 1:
            raise UserError(f"meta_every applies to CTS algorithms; {algorithm} meta-updates every k steps")
        meta_gradient, schedule = spec.build(k, meta_every)
        if process_group is None and dist.is_available() and dist.is_initialized():
            process_group = dist.group.WORLD if dist.get_world_size() > 1 else None
        self.process_group = process_group
        self.inner_optimizers = list(inner_optimizers or [])

        live = [dict(m.named_parameters()) for m in self.models]
        is_shared = shared or _not_in(head_names(self.models[0]))
        shapes = {n: tuple(p.shape) for n, p in live[0].items() if is_shared(n, p)}
        if not shapes:
            what = type(self.models[0]).__name__
            why = (
                " (the default rule leaves out the last nn.Linear, the head, and that is all it has)"
                if shared is None
                else ""
            )
            raise UserError(
                f"the shared rule selected no parameter of {what}{why}; pass shared= to say which parameters "
                f"are meta-learned, e.g. {SHARED_EXAMPLE}, or shared=lambda name, param: True for all"
            )
        for t, params in enumerate(live[1:], start=1):
            _check_same(shapes, {n: tuple(p.shape) for n, p in params.items()}, "model 0", f"model {t}")
        if process_group is not None:
            shapes = _rank0_shapes(shapes, process_group)
        phi = {n: live[0][n].detach().clone() for n in shapes}
        if process_group is not None:
            # φ from rank 0 in one flattened broadcast, shared parameters only: heads may differ in shape
            # between tasks (the reference code all-reduced them too, a known bug).
            flat = flatten(phi)
            dist.broadcast(flat, src=dist.get_global_rank(process_group, 0), group=process_group)
            phi = {n: v.clone() for n, v in unflatten(flat, phi).items()}
        outer = meta_optimizer(list(phi.values())) if meta_optimizer else None
        self.controller = MetaController(
            phi, meta_gradient, schedule, outer=outer, meta_lr=meta_lr, group=process_group
        )
        self._live = live
        self.controller.begin(live)  # every model's shared parameters start at φ
        self.reset_inner_state = reset_inner_state
        self.controller.on_restart.append(self._on_restart)
        self.algorithm, self.k, self.meta_every, self.meta_lr = algorithm, k, meta_every, meta_lr

    def _on_restart(self, controller: MetaController) -> None:
        if self.reset_inner_state:
            for opt in self.inner_optimizers:
                opt.state.clear()  # the next step starts from zero buffers, as a freshly created optimizer

    def step(self) -> None:
        """Count one inner step of every model here; call it after ``opt.step()``.

        Then, when the schedule asks, the meta-update of φ and the CTS shift of every model, and every
        ``k`` steps the restart of every model's shared parameters from φ.
        """
        self.controller.advance(self._live)

    @property
    def phi(self) -> Params:
        """φ, the meta-learned shared parameters (live tensors: read, do not modify)."""
        return self.controller.phi

    @property
    def steps(self) -> int:
        """Inner steps counted so far."""
        return self.controller.step

    def export_state_dict(self, model: int = 0) -> dict[str, Tensor]:
        """``models[model].state_dict()`` with φ in the shared parameters: load it to start a new task."""
        by_tensor = {id(p): k for k, p in self.models[model].named_parameters() if k in self.phi}
        out = {}
        for k, v in self.models[model].state_dict(keep_vars=True).items():
            out[k] = (self.phi[by_tensor[id(v)]] if id(v) in by_tensor else v).detach().clone()
        return out

    def save(
        self,
        path: str,
        *,
        model: int = 0,
        prefix: str = "",
        body: str = "",
        in_channels: int | None = None,
        **body_options: Any,
    ) -> Any:
        """Write φ (and the body's buffers) of ``models[model]`` in ``largemeta export``'s format: a
        ``.safetensors`` file that ``largemeta evaluate --init``, :func:`largemeta.load_phi` and
        :func:`largemeta.load_phi_into` read.

        Args:
            prefix: the body's name inside the model (``"body."`` for ``model.body``): only tensors under it
                are written, named as in the body alone.
            body: the body as ``largemeta.models.create_model`` names it (``convnet``, ``resnet20``,
                ``resnet18``, ``FILE.py:factory``), so that ``evaluate`` can build it; ``body_options`` are
                its options (``width=32``). Without it, ``evaluate`` needs ``--model``.
            in_channels: the body's input channels (default: read off its first convolution).
        """
        from largemeta import phi as phi_file

        state = self.export_state_dict(model)
        params = {n for n, _ in self.models[model].named_parameters()}
        kept = {
            k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix) and (k in self.phi or k not in params)  # φ and buffers, not the head
        }
        if not any(k.startswith(prefix) for k in self.phi):
            raise UserError(
                f"prefix {prefix!r} holds no shared parameter of {type(self.models[model]).__name__}"
            )
        if in_channels is None:
            conv = next((v for v in kept.values() if v.dim() == 4), None)
            in_channels = int(conv.shape[1]) if conv is not None else None
        config = {
            "model": body,
            **body_options,
            "algo": self.algorithm,
            "k": self.k,
            "meta_every": self.meta_every,
            "meta_lr": self.meta_lr,
        }
        return phi_file.save(path, kept, model=body, in_channels=in_channels, step=self.steps, config=config)

    def state_dict(self) -> dict[str, Any]:
        """Step, φ, the meta optimizer and this process's task parameters; save your optimizers beside it."""
        return {**self.controller.state_dict(len(self._live)), "params": [clone(p) for p in self._live]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the models' parameters included, in place)."""
        self.controller.load_state_dict(state)
        for mine, saved in zip(self._live, state["params"], strict=True):
            for k, v in saved.items():
                mine[k].copy_(v)
