"""Bodies by name: the registry of built-in bodies, and any backbone a user names.

:func:`create_model` accepts

- a registered name: ``convnet``, ``resnet20``, ``resnet18`` or one added with :func:`register_model`;
- ``package.module:factory``: any importable callable (a function or an ``nn.Module`` class);
- ``path/to/file.py:factory``: a factory defined in a Python file (loaded as a module of its own; the file's
  folder is *not* put on ``sys.path``, so it cannot shadow installed modules, and it cannot import its
  neighbours: for that, put the folder on ``PYTHONPATH`` and write ``file:factory``);
- ``timm:NAME``: a `timm <https://github.com/huggingface/pytorch-image-models>`_ architecture without its
  classifier (``pip install largemeta[timm]``);
- a name that an installed package registers in the entry-point group ``largemeta.models`` (looked up only
  when the name is not built in, so a plugin can never replace a built-in body).

A body maps images (B, C, H, W) to features (B, F). Options are offered, not imposed: a call site passes
everything it knows (``create_model(name, in_channels=c, width=w)``) and each factory receives the options its
signature names (all of them if it takes ``**kwargs``), so no call site needs to know which body has a width.
Options set to ``None`` count as not given: the factory's default applies. A user factory that takes
``in_channels`` is told the tasks' channel count; one that does not must already expect it. The head's input
size is the body's ``num_features`` when it declares one, else found by one forward pass
(:func:`feature_size`).

Naming a module or file runs its code, like ``torch.hub.load``: take model names from configs you trust.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from largemeta.errors import UserError, check_positive
from largemeta.files import sha256_file
from largemeta.registry import Registry, call_with_accepted

Factory = Callable[..., nn.Module]

MODELS: Registry[Factory] = Registry("model")
"""The built-in bodies (and any registered in this process with :func:`register_model`)."""

register_model = MODELS.register
"""Decorator registering a body factory by name (default: the function's), e.g.
``@register_model("mine")``; ``--set model=mine`` then builds it (in this process: a plugin registers
through :data:`ENTRY_POINT_GROUP`)."""

ENTRY_POINT_GROUP = "largemeta.models"
"""Entry-point group in which installed packages register bodies by name (``name = "pkg.mod:factory"``)."""

SPELLINGS = ("package.module:factory", "path/to/file.py:factory", "timm:NAME")
"""How a model outside the registry is named (listed in the error for an unknown name)."""

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def create_model(name: str, **options: Any) -> nn.Module:
    """Build the body ``name`` (see the module docstring for the spellings) with the ``options`` it takes.

    Example: ``create_model("resnet20", in_channels=1, width=16)``;
    ``create_model("examples/my_body.py:small_cnn", in_channels=1, width=16)`` (``small_cnn`` gets only
    ``in_channels`` if that is all it names). Bad names and factories raise a one-line :class:`UserError`.
    """
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"model must be a registered name or one of {', '.join(SPELLINGS)}, got {name!r}")
    options = {k: v for k, v in options.items() if v is not None}
    if name in MODELS:
        return MODELS.create(name, **options)
    with _user_code(name):  # what it prints goes to stderr: stdout stays the command's (train --json)
        factory = _find_factory(name)
        if not callable(factory):
            raise UserError(
                f"model {name!r}: {type(factory).__name__} object is not callable "
                "(a factory is a function or class returning a torch.nn.Module)"
            )
        try:
            body = call_with_accepted(factory, **options)
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"model {name!r}: the factory raised {_first_line(err)}") from err
    if not isinstance(body, nn.Module):
        raise UserError(
            f"model {name!r}: the factory returned a {type(body).__name__}, not a torch.nn.Module"
        )
    return body


@contextlib.contextmanager
def _user_code(name: str) -> Iterator[None]:
    """Around a user's module or factory: its prints go to stderr, and a ``sys.exit`` in it is a one-line
    error (a command that exits 0 having done nothing would pass for done)."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except SystemExit as err:
        raise UserError(
            f"model {name!r}: its code called sys.exit({err.code!r}); a factory must return a torch.nn.Module"
        ) from None


def check_body(body: nn.Module, name: str, channels: int, image_size: int | tuple[int, int]) -> None:
    """:func:`check_trainable`, then :func:`check_all_used`: before a run writes anything."""
    check_trainable(body, name)
    check_all_used(body, name, channels, image_size)


def check_trainable(body: nn.Module, name: str) -> None:
    """A one-line error for a body that cannot be meta-trained as written: no parameter at all, a parameter
    that is not real floating point (integer, complex), or one frozen with ``requires_grad=False`` (every
    parameter of a body is meta-trained, so it would not stay frozen: fixed tensors belong in buffers)."""
    params = list(body.named_parameters())
    if not params:
        has = "only buffers" if any(True for _ in body.buffers()) else "none"
        raise UserError(
            f"model {name!r} has no parameters ({has}): nothing to meta-train; a body needs at least one "
            "floating-point parameter"
        )
    for key, p in params:
        if not p.is_floating_point():
            raise UserError(
                f"model {name!r}: parameter {key!r} is {str(p.dtype).removeprefix('torch.')}; only real "
                "floating-point parameters can be meta-trained (keep other tensors as buffers: "
                "register_buffer)"
            )
        if not p.requires_grad:
            raise UserError(
                f"model {name!r}: parameter {key!r} has requires_grad=False; every parameter of a body is "
                "meta-trained, so it would not stay frozen (keep fixed tensors as buffers: register_buffer)"
            )


def check_all_used(body: nn.Module, name: str, channels: int, image_size: int | tuple[int, int]) -> None:
    """A one-line error naming a parameter that the body's forward never uses (no gradient could reach it):
    one backward pass of two zero images in eval mode, on copies (no buffer updated, no random number
    drawn from the global generator)."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in body.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in body.named_buffers()}
    device = next(iter(params.values())).device
    was = body.training
    body.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            out = functional_call(
                body, {**params, **buffers}, (torch.zeros(2, channels, height, width, device=device),)
            )
            grads = torch.autograd.grad(out.sum(), list(params.values()), allow_unused=True)
    except Exception:  # a body that fails on this batch: building the run's tasks says why
        return
    finally:
        body.train(was)
    unused = [k for k, g in zip(params, grads, strict=True) if g is None]
    if unused:
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise UserError(
            f"model {name!r}: parameter {unused[0]!r}{more} is not used by the body's forward (no gradient "
            "reaches it); remove it, or keep it as a buffer (register_buffer)"
        )


def list_models(pattern: str = "*") -> list[str]:
    """Names usable without a ``:`` (built in, registered, or from installed packages' entry points) that
    match the shell-style ``pattern``, sorted. Entry points are listed, not imported."""
    plugins = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(n for n in set(MODELS.names()) | plugins if fnmatch.fnmatchcase(n, pattern))


def is_code_reference(name: str) -> bool:
    """Whether ``name`` imports a module or runs a file (``module:factory``, ``file.py:factory``).

    A caller that reads a model name from a file it does not trust (a downloaded ``.safetensors``'s metadata)
    can refuse such names; registered names, entry points and ``timm:`` only load installed code.
    """
    return ":" in name and not name.startswith("timm:") and name not in MODELS


def _find_factory(name: str) -> Any:
    """The factory an unregistered ``name`` refers to, imported but not called (a :class:`UserError` when it
    cannot be)."""
    if name.startswith("timm:"):
        return _timm_factory(name)
    if ":" in name:
        return _reference(name)
    return _entry_point(name)


def feature_size(body: nn.Module, channels: int, image_size: int | tuple[int, int]) -> int:
    """F, the size of the features ``body`` gives for images of ``channels`` × ``image_size`` px.

    ``body.num_features`` when the body declares it (every built-in body does); otherwise one forward pass of
    a dummy batch of two zero images, without gradients and in eval mode (nothing is updated, no random
    numbers are drawn): on the meta device when the body's operations allow it (no arithmetic, no memory),
    else for real on the device of the body's parameters. A body whose output is not a (B, F) batch is a
    :class:`UserError` that says what shape it gave.
    """
    declared = getattr(body, "num_features", None)
    if declared is not None:
        if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
            raise UserError(f"body {type(body).__name__}: num_features must be an int >= 1, got {declared!r}")
        return declared
    check_positive("channels", channels, integer=True)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    check_positive("image size", height, integer=True)
    check_positive("image size", width, integer=True)
    shape = (2, channels, height, width)
    was = body.training
    body.eval()
    try:
        with torch.no_grad():
            try:
                out = _meta_forward(body, shape)
            except Exception:  # an operation without a meta kernel, or a real error: the real run says which
                out = _real_forward(body, shape)
    finally:
        body.train(was)
    given = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != shape[0] or out.shape[1] < 1:
        hint = " (pool and flatten its output)" if isinstance(out, Tensor) and out.dim() > 2 else ""
        raise UserError(
            f"body {type(body).__name__} must map images (B, C, H, W) to features (B, F): "
            f"a batch of shape {shape} gave {given}{hint}"
        )
    return int(out.shape[1])


def source_identity(name: str) -> dict[str, Any] | None:
    """What identifies the code of body ``name``, for a checkpoint to record and a resume to compare: a file's
    path and sha256, a module's name, its file's sha256 and its distribution's version, an entry point's or
    timm's version. None for a body built into largemeta (its code is the package's). Call it once the body
    was built (the module is imported by then)."""
    if name in MODELS:
        return None
    if name.startswith("timm:"):
        return {"package": "timm", "version": _version("timm")}
    where = name.rpartition(":")[0]
    if not where:
        found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name))
        dist = getattr(found[0], "dist", None) if found else None
        return {"entry_point": found[0].value if found else name, "version": getattr(dist, "version", None)}
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser().resolve()
        # not a file (a folder, gone): building the body says so in one line
        return {"file": str(path), "sha256": sha256_file(path) if path.is_file() else None}
    file = _module_file(where)
    top = where.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top, [])
    return {
        "module": where,
        "sha256": sha256_file(Path(file)) if file and Path(file).is_file() else None,
        "version": _version(dists[0]) if dists else None,
    }


def same_source(recorded: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """Whether two :func:`source_identity` records name the same code (by content where both hashed it: a
    file moved with its run is the same code)."""
    if recorded is None or current is None:
        return recorded == current
    if recorded.get("sha256") and current.get("sha256"):
        return recorded["sha256"] == current["sha256"]
    return recorded == current


def describe_source(source: dict[str, Any] | None) -> str:
    if source is None:
        return "a body built into largemeta"
    what = source.get("file") or source.get("module") or source.get("entry_point") or source.get("package")
    digest = (
        f"sha256 {str(source['sha256'])[:12]}" if source.get("sha256") else f"version {source.get('version')}"
    )
    return f"{what} ({digest})"


def _module_file(module: str) -> str | None:
    """The file of ``module``, found without running it (its parent packages are imported)."""
    if module in sys.modules:
        return getattr(sys.modules[module], "__file__", None)
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # a missing or broken parent package: building the body says what is wrong
        return None
    return spec.origin if spec is not None and spec.has_location else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# Forward passes for feature_size ------------------------------------------------------------------------
def _meta_forward(body: nn.Module, shape: tuple[int, ...]) -> Any:
    """The body on shapes only: its tensors replaced by meta tensors, the module itself untouched."""
    named = chain(body.named_parameters(), body.named_buffers())
    tensors = {k: torch.empty_like(v, device="meta") for k, v in named}
    return functional_call(body, tensors, (torch.zeros(shape, device="meta"),))


def _real_forward(body: nn.Module, shape: tuple[int, ...]) -> Any:
    device = next((t.device for t in chain(body.parameters(), body.buffers())), torch.device("cpu"))
    try:
        return body(torch.zeros(shape, device=device))
    except Exception as err:
        raise UserError(
            f"body {type(body).__name__} failed on a batch of shape {shape}: {_first_line(err)} "
            "(does its factory take in_channels?)"
        ) from err


# Resolving names -------------------------------------------------------------------------------------------
def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _reference(name: str) -> Any:
    """``package.module:attr`` or ``path/to/file.py:attr`` (``attr`` may be dotted, as in entry points)."""
    where, _, attr = name.rpartition(":")
    if not where or not _DOTTED.fullmatch(attr):
        raise UserError(f"model {name!r}: expected {' or '.join(SPELLINGS[:2])}")
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    if is_file:
        module = _import_file(name, Path(where).expanduser())
    elif _DOTTED.fullmatch(where):
        module = _import_module(name, where)
    else:
        raise UserError(f"model {name!r}: {where!r} is neither a module name nor a path to a .py file")
    found: Any = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UserError(f"model {name!r}: {where!r} has no attribute {attr!r}") from None
    return found


def _import_module(name: str, module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except Exception as err:
        hint = ""
        if isinstance(err, ModuleNotFoundError) and err.name == module.split(".")[0]:
            stem = module.split(".")[-1]
            hint = f" (is its folder on PYTHONPATH? a file can be named as path/to/{stem}.py:...)"
        raise UserError(f"model {name!r}: cannot import module {module!r}: {_first_line(err)}{hint}") from err


_FILES: dict[Path, tuple[tuple[int, int], ModuleType]] = {}


def _import_file(name: str, path: Path) -> ModuleType:
    """The module of a ``.py`` file, executed once per version of the file (its mtime and size)."""
    if path.suffix != ".py":
        raise UserError(f"model {name!r}: {str(path)!r} is not a .py file")
    if path.is_dir():
        raise UserError(f"model {name!r}: {str(path)!r} is a folder, not a .py file")
    if not path.is_file():
        raise UserError(f"model {name!r}: no such file {str(path)!r}")
    path = path.resolve()
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    if path in _FILES and _FILES[path][0] == stamp:
        return _FILES[path][1]
    # A name of its own (never the stem alone: a file called torch.py must not replace torch in sys.modules);
    # registered while it runs, as importlib does, so dataclasses and pickling-by-reference inside it work.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"_largemeta_file_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"model {name!r}: cannot load {str(path)!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:
        if isinstance(err, SystemExit):
            sys.modules.pop(module_name, None)
            raise
        sys.modules.pop(module_name, None)
        raise UserError(f"model {name!r}: cannot import file {str(path)!r}: {_first_line(err)}") from err
    _FILES[path] = (stamp, module)
    return module


def _entry_point(name: str) -> Any:
    found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name))
    if not found:
        raise UserError(f"unknown model {name!r} (valid: {', '.join([*list_models(), *SPELLINGS])})")
    targets = sorted({ep.value for ep in found})
    if len(targets) > 1:
        raise UserError(
            f"model {name!r} is registered by several installed packages ({', '.join(targets)}); "
            "name one of them as package.module:factory"
        )
    ep = found[0]
    try:
        return ep.load()
    except Exception as err:
        raise UserError(
            f"model {name!r} (entry point {ep.value!r} of group {ENTRY_POINT_GROUP!r}): "
            f"cannot load it: {_first_line(err)}"
        ) from err


def _timm_factory(name: str) -> Factory:
    """A factory for ``timm:NAME``: the architecture with ``num_classes=0``, whose output is pooled features
    (timm models declare them as ``num_features``)."""
    arch = name[len("timm:") :]
    try:
        timm = importlib.import_module("timm")
    except Exception as err:
        raise UserError(
            f"model {name!r} needs timm, which does not import here ({_first_line(err)}): "
            "pip install largemeta[timm]"
        ) from err
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch}*")[:5] if arch else []
        also = f" (similar: {', '.join(close)})" if close else " (see timm.list_models())"
        raise UserError(f"unknown timm model {arch!r}{also}")

    def timm_body(in_channels: int = 3) -> nn.Module:
        return timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_channels)

    timm_body.__name__ = timm_body.__qualname__ = f"timm_{arch}"
    return timm_body
