"""Tasks and suites.

A :class:`TaskSpec` says which images a task trains on and how they are prepared: a dataset (registered
name or bring-your-own path), a class subset, the image size and channel count the model sees, and the
augmentation (random-crop padding, horizontal flip on/off). A :class:`Suite` is a named list of meta-train
tasks and meta-test targets, written in TOML::

    name = "mine"
    description = "what it is for"

    [defaults]            # any TaskSpec field; each task may override it
    image_size = 28
    channels = 1
    crop_padding = 4
    flip = false

    [[meta_train]]
    name = "qd-a"
    dataset = "quickdraw"
    classes = "0-79"      # "all" (default), "a-b[,c-d...]" inclusive index ranges, or a list of
                          # indices / class names, e.g. ["cat", "dog", 17]

    [[meta_test]]
    name = "digits28"
    dataset = "digits"

Built-in suites live in ``largemeta/configs/suites/*.toml`` (see :func:`list_suites`); a path to a TOML
file works wherever a suite name does, and so does a folder of datasets (:func:`suite_from_folder`): each of
its subfolders (a folder of class subfolders) and ``.npz`` files is one meta-train task.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from largemeta.data.store.index import IMAGE_SUFFIXES
from largemeta.errors import UserError, choice_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ClassSpec = str | tuple[int | str, ...]
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class TaskSpec:
    """One task: a dataset, a class subset, and how its images are prepared. Frozen; saved beside runs."""

    name: str
    """Unique within a suite; used for logging and per-task state (heads, generators)."""
    dataset: str
    """A registered dataset name (``largemeta data list``) or a path to a folder or ``.npz``."""
    classes: ClassSpec = "all"
    """Class subset: ``"all"``, inclusive index ranges ``"0-79,100-119"``, or a list of indices / names.
    Labels are renumbered 0..k-1 in the order given."""
    image_size: int = 32
    """Images are resized once, at load, to ``image_size`` x ``image_size``."""
    channels: int = 3
    """1 (RGB is converted to grey) or 3 (grey is repeated to 3 channels)."""
    crop_padding: int = 4
    """Random crop after zero padding of this many pixels per side; 0 turns cropping off."""
    flip: bool = True
    """Random horizontal flip (turn off for digits and other orientation-bound classes)."""
    train_split: str = "train"
    """Split of the dataset the task samples minibatches from."""
    eval_split: str = "test"
    """Split the task is evaluated on (no augmentation)."""

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise UserError(f"every task needs a non-empty 'name', got {self.name!r}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise UserError(f"{where}: 'dataset' must be a dataset name or path, got {self.dataset!r}")
        if isinstance(self.classes, list):
            object.__setattr__(self, "classes", tuple(self.classes))
        if not isinstance(self.classes, (str, tuple)) or (
            isinstance(self.classes, tuple) and not all(isinstance(c, (int, str)) for c in self.classes)
        ):
            raise UserError(
                f'{where}: \'classes\' must be "all", "a-b" ranges or a list of indices/names, '
                f"got {self.classes!r}"
            )
        for key in ("image_size", "crop_padding"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "image_size" else 0):
                raise UserError(
                    f"{where}: {key} must be an integer >= {1 if key == 'image_size' else 0}, got {v!r}"
                )
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise UserError(f"{where}: channels must be 1 or 3, got {self.channels!r}")
        if not isinstance(self.flip, bool):
            raise UserError(f"{where}: flip must be true or false, got {self.flip!r}")
        for key in ("train_split", "eval_split"):
            if getattr(self, key) not in SPLITS:
                raise choice_error(f"{key} of task {self.name!r}", getattr(self, key), SPLITS)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["classes"] = d["classes"] if isinstance(d["classes"], str) else list(d["classes"])
        return d

    def resolve_classes(self, class_names: Sequence[str]) -> np.ndarray:
        """Indices into ``class_names`` selected by :attr:`classes`; ``UserError`` naming unknown ones."""
        return resolve_classes(self.classes, class_names, f"task {self.name!r} ({self.dataset})")

    def class_names_of(self, class_names: Sequence[str]) -> list[str]:
        """The task's class names, in the order of its labels 0..k-1."""
        return [class_names[c] for c in self.resolve_classes(class_names)]

    def select(self, class_names: Sequence[str], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, task_labels)``: the positions in ``labels`` (a split's labels, indices into
        ``class_names``) of the task's classes, and their labels renumbered 0..k-1 in the order the task
        lists its classes."""
        classes = self.resolve_classes(class_names)
        remap = np.full(len(class_names), -1, np.int64)  # dataset label -> task label (-1: not the task's)
        remap[classes] = np.arange(len(classes))
        labels = np.asarray(labels)
        rows = np.flatnonzero(remap[labels] >= 0)
        return rows, remap[labels[rows]]


def _class_error(what: str, bad: object, class_names: Sequence[str]) -> UserError:
    n = len(class_names)
    close = difflib.get_close_matches(str(bad), list(class_names), n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(class_names[:12]) + (f", ... ({n} in all; see 'largemeta data info')" if n > 12 else "")
    return UserError(f"{what}: unknown class {bad!r} (valid: indices 0-{n - 1} or names: {shown}){hint}")


def resolve_classes(spec: ClassSpec, class_names: Sequence[str], what: str = "class subset") -> np.ndarray:
    """Turn a class spec into an int64 index array (order kept, duplicates refused)."""
    n = len(class_names)
    items: list[int | str]
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return np.arange(n, dtype=np.int64)
        items = [s for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    index = {name: i for i, name in enumerate(class_names)}
    out: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise _class_error(what, item, class_names)
        if isinstance(item, int):
            if not 0 <= item < n:
                raise _class_error(what, item, class_names)
            out.append(item)
            continue
        if item in index:  # a name wins over an index reading ("3" in MNIST is both)
            out.append(index[item])
            continue
        m = _RANGE.match(item)
        if not m:
            raise _class_error(what, item, class_names)
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi >= n:
            raise _class_error(what, item, class_names)
        out.extend(range(lo, hi + 1))
    if not out:
        raise UserError(f"{what}: the class subset {spec!r} is empty")
    if len(set(out)) != len(out):
        dup = sorted({c for c in out if out.count(c) > 1})
        raise UserError(f"{what}: classes listed twice: {', '.join(class_names[c] for c in dup)}")
    return np.asarray(out, dtype=np.int64)


@dataclass(frozen=True)
class Suite:
    """Named meta-train tasks and meta-test targets."""

    name: str
    description: str
    meta_train: tuple[TaskSpec, ...]
    meta_test: tuple[TaskSpec, ...]
    source: str = field(default="", compare=False)

    @property
    def tasks(self) -> tuple[TaskSpec, ...]:
        return self.meta_train + self.meta_test

    def datasets(self) -> list[str]:
        """Distinct datasets the suite needs, in first-use order."""
        return list(dict.fromkeys(t.dataset for t in self.tasks))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "meta_train": [t.to_dict() for t in self.meta_train],
            "meta_test": [t.to_dict() for t in self.meta_test],
        }


_TASK_KEYS = tuple(f.name for f in fields(TaskSpec))
_SUITE_KEYS = ("name", "description", "defaults", "meta_train", "meta_test")


def suite_from_dict(raw: dict[str, Any], source: str) -> Suite:
    """Build and validate a :class:`Suite` from parsed TOML."""
    unknown = sorted(set(raw) - set(_SUITE_KEYS))
    if unknown:
        raise choice_error(f"key in suite {source}", unknown[0], _SUITE_KEYS)
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UserError(f"{source}: [defaults] must be a table")
    tasks: dict[str, list[TaskSpec]] = {}
    for group in ("meta_train", "meta_test"):
        entries = raw.get(group, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise UserError(f"{source}: {group} must be an array of tables ([[{group}]])")
        tasks[group] = []
        for entry in entries:
            merged = {**defaults, **entry}
            bad = sorted(set(merged) - set(_TASK_KEYS))
            if bad:
                raise choice_error(f"task key in {source}", bad[0], _TASK_KEYS)
            tasks[group].append(TaskSpec(**merged))
    if not tasks["meta_train"] and not tasks["meta_test"]:
        raise UserError(f"{source}: a suite needs at least one [[meta_train]] or [[meta_test]] task")
    names = [t.name for group in tasks.values() for t in group]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{source}: task names must be unique, repeated: {', '.join(dup)}")
    name = raw.get("name", Path(source).stem)
    return Suite(
        str(name),
        str(raw.get("description", "")),
        tuple(tasks["meta_train"]),
        tuple(tasks["meta_test"]),
        source=source,
    )


def _builtin_dir() -> resources.abc.Traversable:
    return resources.files("largemeta") / "configs" / "suites"


def builtin_suite_file(name: str) -> resources.abc.Traversable:
    """The TOML file of built-in suite ``name``."""
    return _builtin_dir() / f"{name}.toml"


def list_suites() -> list[str]:
    """Names of the built-in suites."""
    return sorted(p.name.removesuffix(".toml") for p in _builtin_dir().iterdir() if p.name.endswith(".toml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A built-in suite by name, a suite TOML file by path, or a folder of datasets
    (:func:`suite_from_folder`)."""
    text_name = str(name_or_path)
    path = Path(text_name).expanduser()
    if text_name in list_suites():
        text, source = (_builtin_dir() / f"{text_name}.toml").read_text(), text_name
    elif path.is_dir():
        return suite_from_folder(path)
    elif path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"suite file {path} does not exist")
        text, source = path.read_text(), str(path)
    else:
        raise choice_error("suite", text_name, [*list_suites(), "<path to a .toml file or a folder>"])
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{source}: not valid TOML: {err}") from None
    except RecursionError:
        raise UserError(f"{source}: nested too deeply to be a suite") from None
    return suite_from_dict(raw, source)


def task_from_path(path: str) -> TaskSpec:
    """A task on a bring-your-own dataset (a folder of class subfolders or an ``.npz``), named after it,
    prepared as :class:`TaskSpec`'s defaults say (32 x 32 RGB, random crop and flip); a suite TOML sets
    anything else."""
    name = Path(path).expanduser().resolve().name.removesuffix(".npz") or path
    return TaskSpec(name=name, dataset=str(path))


def suite_from_folder(root: Path) -> Suite:
    """A folder of datasets as a suite: ``ROOT/<task>/<class>/<images>`` (and ``ROOT/<task>.npz``); every
    dataset is one meta-train task (:func:`task_from_path`), in name order; no meta-test targets.

    A folder that is itself one dataset (its subfolders hold images, or are ``train``/``test`` splits) is
    refused, saying how to train on it."""

    def holds_images(folder: Path) -> bool:
        return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())

    try:
        entries = sorted(
            p
            for p in root.iterdir()
            if not p.name.startswith(".") and (p.is_dir() or (p.is_file() and p.suffix == ".npz"))
        )
        one_dataset = {p.name for p in entries} == {"train", "test"} or any(
            p.is_dir() and holds_images(p) for p in entries
        )
    except OSError as err:
        raise UserError(f"cannot list suite folder {root}: {err.strerror}") from None
    if one_dataset:
        raise UserError(
            f"suite folder {root} is one dataset (its subfolders hold images): a suite folder holds one "
            f"dataset per task (ROOT/<task>/<class>/<images>); to train on this one, set tasks={root}"
        )
    if not entries:
        raise UserError(f"suite folder {root} holds no datasets (expected ROOT/<task>/<class>/<images>)")
    return Suite(
        root.resolve().name,
        f"every dataset in {root}",
        tuple(task_from_path(str(p)) for p in entries),
        (),
        source=str(root),
    )
