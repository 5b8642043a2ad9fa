"""torchrun support: process-group setup from the environment, guarded collectives, object gathering (which
rank serves which task: :mod:`largemeta.train.groups`).

``torchrun --nproc_per_node N --no-python largemeta train ...`` sets RANK/WORLD_SIZE/MASTER_ADDR; we join with
gloo on CPU and NCCL on GPU, with a collective timeout so that a rank that dies makes the others fail within
that time instead of hanging. Multi-node: torchrun's own ``--nnodes``, ``--node_rank`` and
``--rdzv_endpoint``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist

from largemeta.errors import UserError

TIMEOUT_ENV = "LARGEMETA_COLLECTIVE_TIMEOUT"
TIMEOUT_S = 60
"""Seconds a collective waits for the other ranks, unless ``LARGEMETA_COLLECTIVE_TIMEOUT`` says otherwise."""


def collective_timeout_s() -> int:
    """``LARGEMETA_COLLECTIVE_TIMEOUT`` (whole seconds > 0), else :data:`TIMEOUT_S`; a one-line error for
    anything else."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return TIMEOUT_S
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise UserError(f"{TIMEOUT_ENV} must be a whole number of seconds > 0, got {text!r}")
    return value


T = TypeVar("T")
_PEER_WORDS = ("gloo", "nccl", "timed out", "timeout", "connection", "peer", "socket", "broken pipe")
_joined = False


class PeerLost(UserError):
    """A collective failed or timed out: another rank died or stopped responding."""

    exit_code = 3


def init(device: torch.device) -> tuple[int, int, Any]:
    """(rank, world size, process group or None) — joins the group when launched with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    timeout_s = collective_timeout_s()  # checked on one process too: a job script's typo shows at once
    if world <= 1:
        return 0, 1, None
    global _joined
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # a rank that dies before the ranks connect: one line (exit 3) after the timeout, not a traceback
        guarded(
            lambda: dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s)),
            "joining the other ranks",
        )
    _joined = True
    return dist.get_rank(), dist.get_world_size(), dist.group.WORLD


def guarded(fn: Callable[[], T], what: str) -> T:
    """Run a collective; turn a failure or timeout into one clear message."""
    try:
        return fn()
    except RuntimeError as err:
        text = str(err).lower()
        if not isinstance(err, dist.DistError) and not any(w in text for w in _PEER_WORDS):
            raise  # a genuine bug, not a lost peer
        rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
        raise PeerLost(
            f"rank {rank}: {what} failed — another rank died or stopped responding "
            f"(collective timeout {collective_timeout_s()} s): {str(err).splitlines()[0][:200]}"
        ) from None


def gather(obj: T, group: Any) -> list[T] | None:
    """Every rank's ``obj`` on rank 0 (None elsewhere); just ``[obj]`` without a group."""
    if group is None:
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    guarded(lambda: dist.gather_object(obj, out, dst=0), "gathering state")
    return out


def all_gather(obj: T, group: Any) -> list[T]:
    """Every rank's ``obj`` on every rank (a task pool's exchange); just ``[obj]`` without a group."""
    if group is None:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    guarded(lambda: dist.all_gather_object(out, obj, group=group), "exchanging task states")
    return out


def barrier(group: Any) -> None:
    if group is not None:
        guarded(lambda: dist.barrier(), "barrier")


def shutdown() -> None:
    """Leave the process group. Its Gloo threads may live on: end the process with :func:`leave`."""
    if dist.is_initialized():
        dist.destroy_process_group()


def joined() -> bool:
    """Whether this process has joined a process group (it may have left it since)."""
    return _joined


def leave(code: int) -> NoReturn:
    """End a process that joined a process group: output flushed, then ``os._exit(code)``.

    torch keeps the Gloo backend's threads alive past ``destroy_process_group()`` (something inside torch
    still holds the group once ``torch._dynamo`` is imported, which ``torch.optim`` does), and at interpreter
    shutdown they can abort a finished run: SIGABRT, "terminate called without an active exception", exit -6
    after a successful run — now and then, on loaded machines. Skipping interpreter finalization avoids the
    race; every file this package writes is already closed and synced by then.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said
            pass
    os._exit(code)


# Agreement between ranks (used by the trainer's run-folder checks, preemption and non-finite guards) --------
def broadcast(obj: T, group: Any) -> T:
    """Rank 0's ``obj`` on every rank; just ``obj`` without a group."""
    if group is None:
        return obj
    box = [obj]
    guarded(lambda: dist.broadcast_object_list(box, src=0), "agreeing with rank 0")
    return box[0]


def any_rank(flags: list[bool], group: Any, device: torch.device) -> list[bool]:
    """Each flag OR-ed over all ranks (one small all-reduce); ``flags`` itself without a group."""
    if group is None:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    guarded(lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX), "agreeing with the other ranks")
    return [bool(v) for v in t.tolist()]
