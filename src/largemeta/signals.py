"""SIGTERM and SIGINT: stop without losing work.

SLURM and Kubernetes preempt a job with SIGTERM (then SIGKILL after a grace period); Ctrl-C sends SIGINT. The
command line installs one handler for both (:func:`handling`). Where work can stop at a clean boundary — the
training loop, between two steps — the first signal is only recorded (:func:`deferred`, :func:`pending`): the
loop finishes its step, writes a checkpoint and raises :class:`largemeta.errors.Preempted` (the same signal
again within :data:`SAME_STOP_S` seconds is the same stop: a launcher forwarding what the process group
already got). Anywhere else, and on a second signal, the handler raises :class:`largemeta.errors.Stopped` at
once (a ``KeyboardInterrupt``, so ``finally`` blocks run and half-written temporary files are removed) — or,
when the signal lands inside an import, as soon as the import is over (polled with SIGALRM), so that no
module is left half initialised.

Handlers can only be installed in the main thread; elsewhere these functions change nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from largemeta.errors import Stopped

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _State:
    installed = 0
    """Depth of :func:`handling` contexts (the handler is ours while > 0)."""
    deferring = 0
    pending: int | None = None
    after_import = False
    """A signal arrived during an import: raised once the import is over (SIGALRM polls for that)."""
    first_at = 0.0
    """When the pending signal arrived (time.monotonic)."""


_state = _State()
_POLL_S = 0.02
SAME_STOP_S = 2.0
"""The same signal again within this many seconds is the same stop, not a second one: a signal sent to a
process group reaches a torchrun rank twice, once itself and once forwarded by the launcher."""


def _repeated(signum: int) -> bool:
    return signum == _state.pending and time.monotonic() - _state.first_at < SAME_STOP_S


def _importing(frame) -> bool:
    """Whether the interrupted code runs inside an import: an exception raised there can leave modules half
    initialised in ``sys.modules`` (and some libraries swallow it), so it waits until the import is over."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _handler(signum: int, frame) -> None:
    if _state.deferring and _state.pending is None:
        _state.pending = signum  # the loop stops after its current step
        _state.first_at = time.monotonic()
        return
    if _state.deferring and _repeated(signum):
        return
    _state.pending = signum
    if _importing(frame):
        _state.after_import = True
        signal.setitimer(signal.ITIMER_REAL, _POLL_S)
        return
    raise Stopped(signum)


def _poll(signum: int, frame) -> None:
    if not _state.after_import or _state.pending is None:
        return
    if _importing(frame):
        signal.setitimer(signal.ITIMER_REAL, _POLL_S)
        return
    _state.after_import = False
    raise Stopped(_state.pending)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def handling() -> Iterator[None]:
    """Within: SIGTERM and SIGINT raise :class:`Stopped` (or are deferred, see :func:`deferred`)."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (*SIGNALS, signal.SIGALRM)}
    if not _state.installed:
        _state.pending, _state.after_import = None, False
    for s in SIGNALS:
        if previous[s] is not signal.SIG_IGN:  # ignored by whoever started us (a background job): stays so
            signal.signal(s, _handler)
    signal.signal(signal.SIGALRM, _poll)
    _state.installed += 1
    try:
        yield
    finally:
        _state.installed -= 1
        if not _state.installed:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for s, h in previous.items():
            signal.signal(s, h)
        if not _state.installed:
            _state.pending, _state.after_import = None, False


@contextmanager
def deferred() -> Iterator[None]:
    """Within: a first SIGTERM/SIGINT is recorded (:func:`pending`) instead of raised; a second one raises.

    Installs the handler for its duration when no :func:`handling` context is active (library use)."""
    with handling():
        _state.deferring += 1
        try:
            yield
        finally:
            _state.deferring -= 1


def pending() -> int | None:
    """The signal received and not yet acted upon, if any."""
    return _state.pending


def check() -> None:
    """Raise :class:`Stopped` if a signal is pending (a safe point between two parts of the work)."""
    if _state.pending is not None:
        raise Stopped(_state.pending)


def name(signum: int) -> str:
    return signal.Signals(signum).name
