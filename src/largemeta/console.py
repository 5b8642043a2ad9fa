"""What a long command tells a person while it works: a header, progress, notices, all through :mod:`logging`.

Everything goes to the ``largemeta`` logger. The command line (:func:`session`) gives it one handler on
stderr for the life of a command:

* on a terminal, messages as they are, and a progress bar (:class:`Progress`) with the loss and an ETA
  (:func:`bar`: a plain one for downloads, conversions and folder reads);
* off a terminal (a pipe, ``nohup``, SLURM, CI), no bar: every message with a timestamp, and a plain
  progress line at least every ``every`` steps and at least once a minute (:data:`HEARTBEAT_S`).

``-q`` shows warnings only, ``-v`` adds debug detail. :func:`log_file` keeps a copy of every message and
progress line in a folder's ``log.txt`` (appended: a resumed run continues its file). stdout is left alone:
results and ``--json`` output go there, and nothing else does.

Used as a library (no :func:`session`), the logger has no handler of ours: messages go wherever the
application's logging sends them; :func:`notice` then falls back to one ``largemeta: ...`` line on stderr.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

log = logging.getLogger("largemeta")
LOG_FILE = "log.txt"
"""The copy of what a command printed, kept in its run or results folder."""
HEARTBEAT_S = 60.0
"""Off a terminal, the longest silence between two progress lines (seconds)."""
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
"""``-q`` (-1), nothing (0), ``-v`` (1) → the console's level."""


class _Console(logging.Handler):
    """stderr: progress lines only where no bar shows them; on a terminal written past the bar."""

    def __init__(self, stream: TextIO, tty: bool) -> None:
        super().__init__()
        self.stream, self.tty = stream, tty

    def emit(self, record: logging.LogRecord) -> None:
        if self.tty and getattr(record, "progress", False):
            return  # the bar shows it
        try:
            text = self.format(record)
            if self.tty:
                tqdm.write(text, file=self.stream)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()
        except Exception:  # pragma: no cover - logging's own policy for a broken stream
            self.handleError(record)


_console: _Console | None = None


def bars() -> bool:
    """Whether progress shows as a bar: a command's console (:func:`session`) on a terminal, not quiet."""
    return _console is not None and _console.tty and _console.level <= logging.INFO


@contextmanager
def session(verbosity: int = 0, stream: TextIO | None = None) -> Iterator[None]:
    """The console of one command: the ``largemeta`` logger writes to ``stream`` (default: stderr) at the
    level ``verbosity`` picks (:data:`LEVELS`); removed again at the end."""
    global _console
    stream = stream if stream is not None else sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    handler = _Console(stream, tty)
    handler.setLevel(LEVELS[max(-1, min(1, verbosity))])
    handler.setFormatter(
        logging.Formatter("%(message)s") if tty else logging.Formatter("%(asctime)s %(message)s", TIME_FORMAT)
    )
    saved = (_console, log.level, log.propagate)
    _console = handler
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield
    finally:
        _pending.clear()
        log.removeHandler(handler)
        _console = saved[0]
        log.setLevel(saved[1])
        log.propagate = saved[2]


@contextmanager
def log_file(folder: Path) -> Iterator[Path]:
    """Append every message and progress line (the console's, or debug ones too under ``-v``) to
    ``folder/log.txt`` while the block runs."""
    path = Path(folder) / LOG_FILE
    try:
        handler: logging.Handler = _LogFile(path)
    except OSError as err:  # a folder, a dangling link, a read-only folder: the command goes on without it
        log.warning(f"cannot write {str(path)!r} ({err.strerror or err}); going on without a log file")
        yield path
        return
    verbose = _console is not None and _console.level <= logging.DEBUG
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", TIME_FORMAT))
    log.addHandler(handler)
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()


class _LogFile(logging.FileHandler):
    """``log.txt``: a side channel. A write that fails (a full disk, ``/dev/full``) is one warning line on
    the console, and nothing more is written there; the command goes on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def flush(self) -> None:
        if not self.broken:
            try:
                super().flush()
            except OSError:
                self._fail()

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self._fail()

    def _fail(self) -> None:
        if self.broken:
            return
        self.broken = True
        err = sys.exc_info()[1]
        why = getattr(err, "strerror", None) or type(err).__name__ if err is not None else "write failed"
        log.warning(f"cannot write {self.baseFilename!r} ({why}); going on without a log file")

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            self.broken = True


def notice(message: str) -> None:
    """A decision the user should know about (a placement chosen, a damaged cache entry being repaired):
    logged; outside a command's console, one ``largemeta: ...`` line on stderr as before."""
    if log.handlers:
        log.info(message)
    else:
        print(f"largemeta: {message}", file=sys.stderr, flush=True)


_pending: list[str] = []


def header(what: str, settings: dict[str, Any]) -> None:
    """The first line of a long command: what it does and where, then its key settings. It is printed with
    the command's first progress (:class:`Progress`), once the work has begun: a command refused or stopped
    before then prints its one line alone."""
    shown = " | ".join(f"{k} {v}" for k, v in settings.items() if v not in (None, ""))
    _pending.append(f"{what} | {shown}" if shown else what)


def _headers() -> None:
    while _pending:
        log.info(_pending.pop(0))


def begun() -> None:
    """The work has begun: print the pending header now (work that shows no progress of its own here, such as
    an experiment's parts running in worker processes)."""
    _headers()


def duration(seconds: float) -> str:
    """``1h02m``, ``4m05s``, ``12s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """A plain tqdm bar for work that is not a loop of steps (a download, a conversion, a folder read): on
    stderr, gone when done, and quiet when stderr is not a terminal (logs, CI, tests)."""
    kwargs.setdefault("disable", not sys.stderr.isatty())
    kwargs.setdefault("leave", False)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)


class Progress:
    """Progress of one loop of ``total`` steps (from ``start``, when resumed): a bar with the loss and ETA
    on a terminal; off it, a line every ``every`` steps and at least every :data:`HEARTBEAT_S` seconds. The
    loss shown in a line is the mean of the losses given since the previous line."""

    def __init__(self, what: str, total: int, *, every: int, start: int = 0, unit: str = "step") -> None:
        self.what, self.total, self.every, self.unit = what, total, max(1, every), unit
        self.start = self.done = start
        self.t0 = self.last_line = time.monotonic()
        self.losses: list[float] = []
        self.wants_bar = bars() and start < total
        self.bar: tqdm | None = None  # shown from the first step, below the header

    def update(self, done: int, loss: float | None = None) -> None:
        """``done`` steps of ``total`` are done; ``loss``: the latest step's."""
        if _pending:
            _headers()
        if self.bar is None and self.wants_bar:
            self.bar = tqdm(
                total=self.total,
                initial=self.start,
                unit=self.unit,
                desc=self.what,
                dynamic_ncols=True,
                leave=False,
            )
        if self.bar is not None:
            self.bar.update(done - self.done)
            if loss is not None:
                self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
        self.done = done
        if loss is not None:
            self.losses.append(loss)
        now = time.monotonic()
        if done % self.every == 0 or done == self.total or now - self.last_line >= HEARTBEAT_S:
            self.line(now)

    def line(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        rate = (self.done - self.start) / max(now - self.t0, 1e-9)
        parts = [f"{self.what} {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f} %)"]
        if self.losses:
            parts.append(f"loss {sum(self.losses) / len(self.losses):.4f}")
        parts.append(f"{rate:.2f} {self.unit}/s")
        if self.done < self.total and rate > 0:
            parts.append(f"ETA {duration((self.total - self.done) / rate)}")
        else:
            parts.append(f"elapsed {duration(now - self.t0)}")
        log.info(" | ".join(parts), extra={"progress": True})
        self.losses.clear()
        self.last_line = now

    def close(self) -> None:
        self.wants_bar = False
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
