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


PREEMPTED_EXIT = 75
"""Exit code of a command stopped by SIGTERM or SIGINT after leaving its work resumable (EX_TEMPFAIL of
sysexits.h: "a temporary failure; the user is invited to retry"): ``train`` wrote a checkpoint at the step it
stopped, an experiment kept its finished parts. Distinct from errors (1 to 4) and from a plain kill (128 + N),
so a job script can tell "preempted, resume me" apart."""


class Preempted(Exception):
    """The command stopped on a signal and left everything resumable; ``str(err)`` says how to continue.
    ``signal_name`` names the signal (as :class:`Stopped`'s does), ``step`` where training stopped (None when
    not training)."""

    exit_code = PREEMPTED_EXIT

    def __init__(self, message: str, *, signal_name: str = "a signal", step: int | None = None) -> None:
        super().__init__(message)
        self.signal_name, self.step = signal_name, step


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived where the work cannot stop at a step boundary (raised by the handler of
    :mod:`largemeta.signals`); a ``KeyboardInterrupt``, so ``finally`` blocks and temporary-file clean-up
    run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        import signal

        return signal.Signals(self.signum).name
