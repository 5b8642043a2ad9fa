"""Errors that carry a one-line message meant for the user.

Library code raises :class:`UserError` (or a subclass) for bad input: a bad config value, CLI argument,
dataset, checkpoint or file. The message names the bad value and what is valid. The CLI prints it as one
line on stderr and exits with :attr:`UserError.exit_code`; it never prints a traceback for these unless
``--debug`` is given.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user; ``str(err)`` is a complete one-line explanation."""

    exit_code = 2


def choice_error(what: str, value: object, valid: Iterable[object]) -> UserError:
    """``UserError`` for ``value`` not among ``valid``: ``unknown optimizer 'sgdd' (valid: adam, sgd)``."""
    listed = ", ".join(str(v) for v in valid)
    return UserError(f"unknown {what} {value!r} (valid: {listed})")


def check_positive(name: str, value: float, *, integer: bool = False) -> None:
    """Raise ``UserError`` unless ``value`` is a finite number > 0 (an int when ``integer``)."""
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not value > 0 or value != value or value == float("inf"):
        raise UserError(f"{name} must be {kind} > 0, got {value!r}")
