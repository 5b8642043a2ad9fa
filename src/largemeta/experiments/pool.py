"""Running an experiment's parts: one after another in this process, or up to ``jobs`` at once in worker
processes (``--jobs N``).

A worker is a fresh Python process (``spawn``: nothing inherited but the part it is given) running torch on
``cores // jobs`` threads, so that N parts on N cores do not fight over them. Each part's work is a pure
function of its arguments and its own run folder, so it computes in a worker what it computes here (to the
rounding of the thread count). What the work returns is kept by the driver, in this process, in the order
the parts were given — never in the order they finished — so ``results.json`` is the same with any ``jobs``.

Order within a :class:`~largemeta.experiments.spec.Part` chain is kept (a run folder is trained from
milestone to milestone by one worker at a time), and a :data:`~largemeta.experiments.spec.WAIT` holds the
parts after it until every part before it is kept.

SIGTERM or SIGINT (to this process, or to the process group as SLURM and Ctrl-C send it): the workers are
told too (the same signal twice is one stop, :data:`largemeta.signals.SAME_STOP_S`), a training worker
checkpoints after its step, every part that finished is kept, and the stop is raised here: the experiment
exits 75 and the same command continues it.
"""

from __future__ import annotations

import collections
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from typing import Any

from largemeta.errors import Preempted, Stopped
from largemeta.experiments.spec import WAIT, Part

_worker: ExitStack | None = None
"""A worker's console and signal handlers, held for the worker's life."""


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _start(threads: int) -> None:
    """A worker's start: its torch threads, a console that shows warnings only (the driver says what runs),
    and the signal handlers of the command line."""
    global _worker
    import torch

    from largemeta import console, signals

    torch.set_num_threads(threads)
    _worker = ExitStack()
    _worker.enter_context(console.session(-1))
    _worker.enter_context(signals.handling())


def _run(work: Callable[[], Any]) -> tuple[str, Any]:
    """A part's work in a worker: ("done", its value), or ("stopped", the signal) when a signal stopped it
    (raised again by the driver: the exceptions of a stop do not cross processes whole)."""
    try:
        return "done", work()
    except (Preempted, Stopped) as err:
        return "stopped", err.signal_name


def run_parts(
    parts: Iterator[Part | object],
    jobs: int,
    *,
    done: Callable[[str], bool],
    finish: Callable[[Part, Any], None],
    log: Callable[[str], None],
) -> None:
    """Run every part of ``parts`` that is not ``done`` (by label), ``finish(part, value)`` after each in
    their order; up to ``jobs`` at once in worker processes when ``jobs`` > 1."""
    if jobs == 1:
        for part in parts:
            if part is WAIT or done(part.label):
                continue
            _started(log, f"{part.label}: started")
            finish(part, part.work())
        return
    import multiprocessing

    threads = max(1, cores() // jobs)
    pool = ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start, initargs=(threads,)
    )
    given: collections.deque[tuple[Part, Future]] = collections.deque()  # submitted, not yet kept
    try:
        _schedule(parts, jobs, pool, given, done, finish, log)
    except BaseException:
        _stop(pool, given, finish)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _schedule(parts, jobs, pool, given, done, finish, log) -> None:
    queue: list[Part] = []  # given by the experiment, waiting for a worker (or for their chain)
    more, held = True, False  # held: a WAIT was given, and parts before it are still running

    def running() -> list[Part]:
        return [p for p, f in given if not f.done()]

    def startable() -> Part | None:
        if len(running()) >= jobs:
            return None
        # a chain's next part starts once the part before it is kept: a part that finished, and is not kept
        # when a stop comes, then has no successor that trained its run folder further
        busy = {_chain(p) for p, _ in given}
        return next((part for part in queue if _chain(part) not in busy), None)

    while True:
        while len(running()) < jobs:
            part = startable()
            if part is not None:
                queue.remove(part)
                given.append((part, pool.submit(_run, part.work)))
                _started(log, f"{part.label}: started ({len(running())} of {jobs} workers busy)")
                continue
            if not more or held:
                break
            part = next(parts, None)
            if part is None:
                more = False
            elif part is WAIT:
                held = bool(given or queue)
            elif not done(part.label):
                queue.append(part)
        if given:
            wait([f for _, f in given], return_when=FIRST_COMPLETED)
        _keep_finished(given, finish)
        if held and not given and not queue:
            held = False
        elif not (more or queue or given):
            return


def _started(log: Callable[[str], None], line: str) -> None:
    """Say that a part started, after the command's header (which waits for the work to begin)."""
    from largemeta import console

    console.begun()
    log(line)


def _keep_finished(given, finish) -> None:
    """Keep, in the order given, every part whose work finished and every part before it finished too."""
    while given and given[0][1].done():
        part, future = given.popleft()
        status, value = future.result()  # a worker's error is raised here, as it would be in this process
        if status == "stopped":
            raise Stopped(signal.Signals.__members__.get(value, signal.SIGTERM))
        finish(part, value)


def _chain(part: Part) -> str:
    return part.chain if part.chain is not None else f"part:{part.label}"


def _stop(pool: ProcessPoolExecutor, given, finish) -> None:
    """After a stop or an error: tell the workers (a worker still running would otherwise run to its end),
    wait for them, and keep every part that finished before the first that did not."""
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    wait([f for _, f in given])
    while given:
        part, future = given.popleft()
        try:
            status, value = future.result()
        except BaseException:
            return
        if status != "done":
            return
        finish(part, value)
