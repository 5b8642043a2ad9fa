"""Training configuration: one frozen dataclass, read from TOML, overridden by flags, saved beside each run.

Every field has a docstring (the CLI and docs list them). Values are checked by :func:`validate`; a bad one
raises :class:`UserError` naming the key, the value and what is valid. ``--set key=value`` parses ``value``
by the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from largemeta.core.algorithms import ALGORITHMS
from largemeta.core.inner import INNER_OPTIMIZERS
from largemeta.data.tasks.loader import check_options
from largemeta.devices import check_name as check_device
from largemeta.errors import UserError, choice_error
from largemeta.execution import GRAPH, STEP_CHOICES
from largemeta.files import atomic_write_text
from largemeta.trackers import check_names as check_trackers
from largemeta.train.paths import absolute

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TRAIN_ALGORITHMS = tuple(ALGORITHMS)
META_OPTIMIZERS = {"sgd": "SGD", "adam": "Adam"}
"""The outer optimizer choices and their ``torch.optim`` classes."""
MAX_STEPS = 10**9
FLOAT32_MAX = 3.4028234663852886e38
"""Rates and coefficients meet float32 tensors: a larger value overflows there, so it is refused here."""


@dataclass(frozen=True)
class TrainConfig:
    suite: str = "offline"
    """Suite name (``largemeta data suite``), path to a suite TOML, or a folder of datasets (one task per
    subfolder of class subfolders, or per ``.npz``); its meta-train tasks are trained on."""
    tasks: tuple[str, ...] = ()
    """Names of the suite's meta-train tasks to use (default: all), or dataset paths (a folder of class
    subfolders, an ``.npz``), each a task of its own; ``single`` needs exactly one."""
    model: str = "convnet"
    """Body: ``convnet``, ``resnet20``, ``resnet18`` (torchvision extra), ``file.py:factory``,
    ``module:factory``, ``timm:NAME`` (timm extra) or a name registered by a plugin (``largemeta.models``)."""
    width: int = 32
    """Body width (convnet channels; resnet20 first-stage width, 16 in the paper)."""
    init: str = ""
    """Start φ from given weights: a run folder, a FILE.safetensors from ``largemeta export``, or
    ``torchvision:resnet18`` (ImageNet weights, when torchvision has them locally). Default: random."""
    algo: str = "cts"
    """Algorithm (``largemeta.core.algorithms``): cts, cts-reptile, reptile, cts-fomaml, cts-fomaml-official,
    fomaml, cts-leap, leap, imaml, multitask, single."""
    steps: int = 1000
    """Cumulative inner steps per task (the budget)."""
    k: int = 100
    """Inner steps per trajectory before a restart from φ."""
    meta_every: int = 1
    """Inner steps between CTS meta-updates (the paper: 1). The plain algorithms use K."""
    batch_size: int = 32
    """Minibatch size of every inner step."""
    inner_optimizer: str = "sgdm"
    """Inner optimizer: sgd, sgdm (momentum), nesterov, adam."""
    inner_lr: float = 0.01
    """Inner learning rate α."""
    momentum: float = 0.9
    """Momentum of sgdm/nesterov."""
    weight_decay: float = 5e-4
    """L2 weight decay of the inner optimizer."""
    meta_optimizer: str = "sgd"
    """Outer optimizer over φ: sgd or adam."""
    meta_lr: float = 0.01
    """Meta learning rate β."""
    reset_inner_state: bool = False
    """Re-create the inner optimizer state at every restart (default: keep it, as the paper's image code)."""
    query_fraction: float = 0.25
    """Share of each task's training images held out as query data for FOMAML and iMAML."""
    imaml_lambda: float = 0.5
    """iMAML's regularization λ."""
    imaml_cg_steps: int = 10
    """Conjugate-gradient iterations of iMAML."""
    seed: int = 0
    """One seed for the whole run (model, heads, samplers)."""
    device: str = "auto"
    """auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps; a device this machine lacks is refused."""
    executor: str = "loop"
    """How all tasks' inner steps run: loop, channels_last, autocast (bf16), channels_last+autocast, batched
    (vmap over same-shaped tasks), cuda_graph (the whole meta-step as one CUDA graph; GPU, SGD inner only)."""
    sync_batchnorm: bool = True
    """When a task is served by several ranks (torchrun with more ranks than tasks): normalize with the whole
    batch's BatchNorm statistics, synchronised over the task's ranks (exact: the φ of one process). false:
    each rank's slice alone (faster, but results then depend on the number of ranks). No effect otherwise."""
    checkpoint_every: int = 500
    """Write a checkpoint every this many steps (and at the end)."""
    log_every: int = 50
    """Write a metrics line every this many steps."""
    eval_batches: int = 1
    """Batches of each task's held-out split evaluated at each log line (0: none)."""
    shift_error_every: int = 0
    """Measure the CTS shift error on task 0 every this many restarts (0: off)."""
    data_dir: str = ""
    """Dataset cache folder (default: LARGEMETA_DATA_DIR or the user cache)."""
    tasks_per_trajectory: int = 0
    """Tasks drawn from the suite's meta-train pool for each trajectory, at the start and at every restart
    (seeded, without replacement pass by pass, checkpointed; each task keeps its head, BatchNorm statistics
    and sampler across draws: ``largemeta.core.assignment``); 0 = every task in every trajectory (the
    paper)."""
    data_placement: str = "auto"
    """Where task images live: device (decoded once onto the training device: the fast path), stream (read and
    decoded from disk by worker processes as batches are drawn: any size), or auto (device when the decoded
    images that must be resident at once fit memory_budget_gb, else stream)."""
    memory_budget_gb: float = 0.0
    """auto's budget for decoded task images, in GB; 0 = half the free memory of the device (CUDA) or host."""
    stream_workers: int = 0
    """Worker processes decoding streamed images (per rank); 0 = one per CPU core but one, 1 to 8."""
    tensorboard: bool = False
    """Also write TensorBoard event files (the same as naming tensorboard in trackers)."""
    trackers: tuple[str, ...] = ()
    """Experiment trackers that receive the config and every metrics line: tensorboard, mlflow, wandb (each
    needs its package: pip install 'largemeta[mlflow]')."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


FIELDS = {f.name: f for f in fields(TrainConfig)}
# Keys that may differ when resuming: a longer budget, and how often to log or save.
RESUMABLE_CHANGES = (
    "steps",
    "checkpoint_every",
    "log_every",
    "device",
    "tensorboard",
    "trackers",
    "data_dir",
    # where images live does not change which batches are drawn (on CUDA the run keeps its data placement)
    "data_placement",
    "memory_budget_gb",
    "stream_workers",
)


def _type_name(name: str) -> str:
    default = FIELDS[name].default
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        tuple: "a list of names",
    }[type(default)]


def _coerce(name: str, value: Any) -> Any:
    """Check ``value`` against the field's type (TOML values) — ints are accepted for floats."""
    default = FIELDS[name].default
    kind = type(default)
    ok = (
        (kind is bool and isinstance(value, bool))
        or (kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (kind is str and isinstance(value, str))
        or (kind is tuple and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
    )
    if not ok:
        raise UserError(f"config key {name!r} must be {_type_name(name)}, got {value!r}")
    return float(value) if kind is float else tuple(value) if kind is tuple else value


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``: the value is parsed by the key's type."""
    if "=" not in text:
        raise UserError(f"--set {text!r} is not key=value")
    name, raw = (s.strip() for s in text.split("=", 1))
    _check_key(name)
    kind = type(FIELDS[name].default)
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            value: Any = raw.lower() in ("true", "1", "yes")
        elif kind is int:
            value = int(raw)
        elif kind is float:
            value = float(raw)
        elif kind is tuple:
            value = tuple(s.strip() for s in raw.split(",") if s.strip())
        else:
            value = raw
    except ValueError:
        raise UserError(f"config key {name!r} must be {_type_name(name)}, got {raw!r}") from None
    return name, value


def _check_key(name: str) -> None:
    if name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(FIELDS)})"
        raise UserError(f"unknown config key {name!r}{hint}")


def from_mapping(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A validated config: ``base`` (default: the defaults) with ``values`` applied."""
    for name in values:
        _check_key(name)
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    cfg = dataclasses.replace(base or TrainConfig(), **coerced)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML config (flat keys, or grouped in tables whose keys are config keys) and apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file() and str(path) in shipped_configs():
            p = Path(str(resources.files("largemeta.configs") / f"{path}.toml"))
        if not p.is_file():
            raise UserError(
                f"config file {str(path)!r} does not exist (shipped: {', '.join(shipped_configs())})"
            )
        try:
            raw = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"config file {str(path)!r} is not valid TOML: {err}") from None
        except RecursionError:
            raise UserError(f"config file {str(path)!r} is nested too deeply to be a config") from None
        for key, value in raw.items():
            if isinstance(value, dict):  # [section] tables only group keys for readability
                values.update(value)
            else:
                values[key] = value
    values.update(overrides or {})
    return from_mapping(absolute(values))  # every path absolute, once (largemeta.train.paths)


def shipped_configs() -> list[str]:
    """Names of the configs shipped with largemeta (``--config offline`` finds ``offline.toml``)."""
    return sorted(
        p.name[:-5] for p in resources.files("largemeta.configs").iterdir() if p.name.endswith(".toml")
    )


def _range(name: str, ok: bool, valid: str) -> None:
    if not ok:
        raise UserError(f"config key {name!r} out of range: {valid}")


def validate(cfg: TrainConfig) -> None:
    """Raise :class:`UserError` for the first bad value."""
    algo = ALGORITHMS.get(cfg.algo)  # one line listing the valid names when unknown
    INNER_OPTIMIZERS.get(cfg.inner_optimizer)
    if cfg.meta_optimizer not in META_OPTIMIZERS:
        raise choice_error("meta optimizer", cfg.meta_optimizer, META_OPTIMIZERS)
    if cfg.executor not in STEP_CHOICES:
        raise choice_error("executor", cfg.executor, STEP_CHOICES)
    _range("steps", 1 <= cfg.steps <= MAX_STEPS, f"1 <= steps <= {MAX_STEPS}, got {cfg.steps}")
    _range("k", 1 <= cfg.k <= MAX_STEPS, f"1 <= k <= {MAX_STEPS}, got {cfg.k}")
    _range("meta_every", 1 <= cfg.meta_every <= cfg.k, f"1 <= meta_every <= k={cfg.k}, got {cfg.meta_every}")
    _range("batch_size", 1 <= cfg.batch_size <= 65536, f"1 <= batch_size <= 65536, got {cfg.batch_size}")
    _range("width", 1 <= cfg.width <= 4096, f"1 <= width <= 4096, got {cfg.width}")
    for name in ("inner_lr", "meta_lr", "imaml_lambda"):
        v = getattr(cfg, name)
        _range(name, 0 < v <= FLOAT32_MAX, f"a number > 0 and <= {FLOAT32_MAX:.4g} (float32), got {v}")
    _range("momentum", 0 <= cfg.momentum < 1, f"0 <= momentum < 1, got {cfg.momentum}")
    _range(
        "weight_decay",
        0 <= cfg.weight_decay <= FLOAT32_MAX,
        f"a number >= 0 and <= {FLOAT32_MAX:.4g} (float32), got {cfg.weight_decay}",
    )
    _range("query_fraction", 0 < cfg.query_fraction < 1, f"0 < query_fraction < 1, got {cfg.query_fraction}")
    _range("imaml_cg_steps", 1 <= cfg.imaml_cg_steps <= 1000, f"1..1000, got {cfg.imaml_cg_steps}")
    _range("seed", 0 <= cfg.seed < 2**63, f"0 <= seed < 2**63, got {cfg.seed}")
    for name in ("checkpoint_every", "log_every"):
        v = getattr(cfg, name)
        _range(name, 1 <= v <= MAX_STEPS, f"1 <= {name} <= {MAX_STEPS}, got {v}")
    _range("eval_batches", 0 <= cfg.eval_batches <= 1000, f"0..1000, got {cfg.eval_batches}")
    _range("shift_error_every", cfg.shift_error_every >= 0, f">= 0, got {cfg.shift_error_every}")
    if algo.joint and cfg.executor != "loop":
        raise UserError(
            f"joint training (algo {cfg.algo!r}) runs the plain loop: executor must be 'loop', "
            f"got {cfg.executor!r}"
        )
    repeated = sorted({t for t in cfg.tasks if cfg.tasks.count(t) > 1})
    if repeated:
        raise UserError(f"config key 'tasks' names {', '.join(map(repr, repeated))} more than once")
    if algo.single_task and len(cfg.tasks) != 1:
        raise UserError(f"algo {cfg.algo!r} trains on one task: set tasks to one name, got {list(cfg.tasks)}")
    if cfg.shift_error_every and not algo.cts:
        raise UserError(f"shift_error_every needs a CTS algorithm, got algo {cfg.algo!r}")
    check_device(cfg.device, "config key 'device'")
    check_options(cfg.data_placement, cfg.memory_budget_gb, cfg.stream_workers)
    check_trackers(cfg.trackers)
    m = cfg.tasks_per_trajectory
    _range(
        "tasks_per_trajectory",
        0 <= m <= MAX_STEPS,
        f"0 <= tasks_per_trajectory <= {MAX_STEPS} (and at most the suite's tasks; 0: every task), got {m}",
    )
    if m and algo.joint:
        raise UserError(
            f"tasks_per_trajectory needs a meta-learning algorithm: {cfg.algo!r} trains every task at every "
            f"step (set tasks_per_trajectory = 0)"
        )
    if m and cfg.executor == GRAPH:
        raise UserError(
            "executor 'cuda_graph' does not support task pools (tasks_per_trajectory > 0): a redraw replaces "
            "the captured tensors; choose another executor"
        )


def tracker_names(cfg: TrainConfig) -> tuple[str, ...]:
    """The trackers a run logs to: ``trackers``, and tensorboard when ``tensorboard = true``."""
    return tuple(dict.fromkeys(cfg.trackers + (("tensorboard",) if cfg.tensorboard else ())))


def diff(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """Keys whose values differ between a saved run's config and ``current`` (resume check)."""
    now, defaults = current.to_dict(), TrainConfig().to_dict()
    # a key the saved run predates had its default value then (the behaviour of the older version)
    return [k for k in FIELDS if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != now[k]]


def save_config(cfg: TrainConfig, path: Path) -> None:
    """The human-readable copy of the resolved config (``config.json``), written atomically."""
    atomic_write_text(path, json.dumps(cfg.to_dict(), indent=2) + "\n")
