"""The config's keys as the config defines them: name, type, default and the first sentence of the field's
own docstring (read from :class:`largemeta.train.config.TrainConfig`'s source, so it cannot go stale), and a
resolved config written as TOML that ``--config`` reads back."""

from __future__ import annotations

import ast
import inspect
import json
import math
import textwrap
from dataclasses import dataclass
from typing import Any

from largemeta.train.config import FIELDS, TrainConfig, _type_name


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: Any
    doc: str
    """The field's docstring, whitespace joined."""

    @property
    def summary(self) -> str:
        """The docstring's first sentence."""
        first = self.doc.split(". ", 1)[0].rstrip(".")
        return first + "."


def keys() -> list[Key]:
    """Every config key, in the order the config defines them."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(TrainConfig)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:] + [None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                doc = " ".join(str(after.value.value).replace("``", "").split())
            docs[node.target.id] = doc
    return [Key(name, _type_name(name), FIELDS[name].default, docs.get(name, "")) for name in FIELDS]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            repr(value)
            if math.isfinite(value)
            else ("nan" if value != value else f"{'-' if value < 0 else ''}inf")
        )
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def to_toml(cfg: TrainConfig) -> str:
    """The resolved config as flat TOML (``--config FILE`` reads it back to the same config)."""
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in cfg.to_dict().items())
