"""A tiny generic name → factory registry (timm-style ``register`` / ``create`` / ``list``).

One class serves models here and can serve datasets or algorithms elsewhere. Unknown names raise
:class:`~largemeta.errors.UserError` listing the valid ones, so a typo in a config is a one-line error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from largemeta.errors import choice_error

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories by name. ``kind`` names the registry in error messages (``unknown model 'x' (valid: ...)``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a factory under ``name`` (default: the function's name)."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            key = name or factory.__name__
            if key in self._factories:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            self._factories[key] = factory
            return factory

        return add

    def create(self, name: str, **kwargs: Any) -> T:
        if name not in self._factories:
            raise choice_error(self.kind, name, self.names())
        return self._factories[name](**kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._factories if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._factories
