"""A small generic name -> object registry (timm style).

One :class:`Registry` holds datasets here; the same class can hold models or algorithms. Lookups of an
unknown name raise a one-line :class:`~largemeta.errors.UserError` that lists the valid names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from largemeta.errors import UserError, choice_error

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, e.g. ``DATASETS = Registry[DatasetSpec]("dataset")``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; registering a name twice is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(entry: T) -> T:
            return self.add(name, entry)

        return deco

    def get(self, name: str) -> T:
        """The entry called ``name``; ``UserError`` listing the valid names when there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise choice_error(self.kind, name, sorted(self._entries)) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the shell-style ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["Registry", "UserError"]
