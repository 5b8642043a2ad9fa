"""One small name → entry registry (timm style) for every pluggable kind: models, meta-gradients, inner
optimizers, executors, datasets.

An entry is either a plain object (a dataset's spec) or a factory. ``create(name, **options)`` calls a factory
with the options *it* takes (by its signature), so a call site can offer everything it knows
(``create("convnet", in_channels=1, width=16)``) without knowing which entry takes a width. An unknown name is
a one-line :class:`~largemeta.errors.UserError` listing the valid ones, so a typo in a config never gets far.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from largemeta.errors import choice_error

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name; ``kind`` names them in errors (``unknown model 'x' (valid: ...)``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name registered twice is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator form of :meth:`add` (default name: the decorated function's)."""

        def deco(entry: T) -> T:
            return self.add(name or entry.__name__, entry)  # type: ignore[attr-defined]

        return deco

    def get(self, name: str) -> T:
        """The entry called ``name``."""
        try:
            return self._entries[name]
        except KeyError:
            raise choice_error(self.kind, name, self.names()) from None

    def create(self, name: str, **options: Any) -> Any:
        """Call the factory ``name`` with those of ``options`` its signature names (all, if it takes
        ``**``)."""
        return call_with_accepted(self.get(name), **options)  # type: ignore[arg-type]

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the shell-style ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def call_with_accepted(factory: Callable[..., Any], **options: Any) -> Any:
    """``factory(**options)`` restricted to the keyword arguments ``factory`` accepts."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it everything
        return factory(**options)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return factory(**options)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return factory(**{k: v for k, v in options.items() if k in names})
