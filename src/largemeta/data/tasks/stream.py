"""Images that stay on disk: read, decoded and resized by ``DataLoader`` worker processes as a task samples
them.

A :class:`StreamRows` is the storage of a :class:`~largemeta.data.tasks.images.TaskImages` that holds no image
anywhere: a registered dataset's rows are read from its cache entry's ``.npy`` files at their offsets
(:mod:`largemeta.data.store.cached`), a bring-your-own folder's files from its listing
(:mod:`largemeta.data.store.index`). Memory holds the labels, the listing and the batches in flight, whatever
the size of the dataset. The task's :class:`~largemeta.data.tasks.sampler.TaskSampler` decides every batch, as
it does for images on the device.

How a training batch is made, and why a streamed run resumes exactly::

    main process                                        a worker process
    state = sampler.get_state()       (kept)
    draw = sampler.draw(B)            (indices, crop offsets, flip mask)
    request (files or rows of draw.indices) ──────────▶ read, decode, resize: uint8 (B, C, S, S)
            ... drawn ahead: up to `depth` per task ◀── (pinned memory when the device is CUDA)
    on arrival: copied to the device (non-blocking); on use: crop, flip and normalize there with the drawn
    offsets and mask, as for images on the device

Every random draw is made in the main process by the task's sampler, on a CPU generator seeded with the
task's seed; workers only read and decode. On a CPU device the device-resident sampler's generator is a CPU
generator too, so a streamed task yields the very batches a device-resident one does wherever the two decode
and resize alike (the cache's arrays: always, through the same resize; a folder: where its images are already
square at the task's size — streaming resizes each file straight to the task's size, the device path first to
the folder's common size). On CUDA the device-resident sampler draws from a CUDA generator, a different
sequence: there the two placements give different (equally valid) batches, and a run resumes with the
placement it started with. Draws made ahead are not yet used: :meth:`StreamRows.pending_state` is the sampler
state from before the oldest of them (kept with each draw), which is what the task checkpoints, and
``drop_pending`` forgets them on a restore (batches still in flight are discarded as they arrive), so a
checkpoint resumes at the batch the training loop would have used next.

One :class:`StreamHub` — one ``DataLoader`` and its worker processes — serves every streamed task of a
process. Its requests are self-contained (which file or which rows, at which size), so workers know nothing
about tasks, and tasks come and go (a task pool redraws them) without restarting workers. The loader's sampler
runs in the main process and issues requests on demand: for the task being waited on first, then for the task
with the fewest batches drawn ahead.

Failures, each a :class:`StreamError` (one line, exit 2; the training loop writes no checkpoint after it): a
file missing, unreadable or truncated when a worker reads it (named; raised when its batch is used); a worker
process that dies (found within a few seconds of waiting for its batch); no batch for
``LARGEMETA_STREAM_TIMEOUT`` seconds (default 300).
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from largemeta.data.sources.byo import square_resize
from largemeta.data.store.arrays import ArrayDataset
from largemeta.data.store.index import FolderIndex, Listing
from largemeta.data.tasks.augment import to_grey
from largemeta.data.tasks.images import TaskImages, prepare_images
from largemeta.data.tasks.sampler import Draw, TaskSampler
from largemeta.data.tasks.suite import TaskSpec
from largemeta.errors import UserError

TIMEOUT_ENV = "LARGEMETA_STREAM_TIMEOUT"
POLL_S = 5.0
"""How often a wait for a batch checks that the worker processes are alive."""
DEPTH = 2
"""Batches each task draws ahead."""


class StreamError(UserError):
    """A streamed batch could not be made: a file unreadable, a worker process dead, or no batch in time."""


@dataclass(frozen=True)
class Failure:
    """A worker's answer for a batch it could not make: the file at fault and why."""

    path: str
    reason: str


# ------------------------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class ArrayRows:
    """A uint8 ``.npy`` array (N, H, W, C) on disk, rows read at their offsets with ``pread`` (not through a
    memory map: a file truncated mid-run is then a clean error naming it, not a SIGBUS)."""

    path: str
    offset: int
    shape: tuple[int, ...]

    @classmethod
    def of(cls, array: np.ndarray, what: str) -> ArrayRows:
        if not isinstance(array, np.memmap) or array.filename is None:
            raise ValueError(f"{what}: streaming needs arrays memory-mapped from a cache entry")
        if array.dtype != np.uint8 or array.ndim != 4 or not array.flags.c_contiguous:
            raise ValueError(f"{what}: expected a C-ordered uint8 (N, H, W, C) array, got {array.dtype}")
        return cls(str(array.filename), int(array.offset), tuple(int(s) for s in array.shape))

    def job(self, rows: np.ndarray) -> tuple:
        return ("rows", self.path, self.offset, self.shape, np.asarray(rows, np.int64))


@dataclass(frozen=True, eq=False)
class FileRows:
    """Image files of a folder's listing (paths relative to ``root``)."""

    root: str
    listing: Listing

    def job(self, rows: np.ndarray) -> tuple:
        return ("files", [os.path.join(self.root, p) for p in self.listing.paths(rows)])


def read_rows(path: str, offset: int, shape: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
    """Rows of an array file as uint8 (len(rows), H, W, C); :class:`Failure`-worthy ``OSError`` when the file
    is shorter than its header promises."""
    row = int(np.prod(shape[1:]))
    out = np.empty((len(rows), *shape[1:]), np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < offset + shape[0] * row:
            raise OSError(f"truncated: {size} bytes, its header promises {offset + shape[0] * row}")
        flat = out.reshape(len(rows), row)
        for i, r in enumerate(rows):
            got = os.pread(fd, row, offset + int(r) * row)
            if len(got) != row:
                raise OSError(f"truncated: row {int(r)} lies past the end of the file")
            flat[i] = np.frombuffer(got, np.uint8)
    finally:
        os.close(fd)
    return out


_GREY_MODES = ("1", "L", "I", "I;16", "F")


def decode_file(path: str, size: int, channels: int) -> torch.Tensor:
    """One image file as uint8 (C, size, size): the shorter side resized to ``size`` and the centre crop
    (:func:`~largemeta.data.sources.byo.square_resize`), grey (ITU-R 601 luma, as the device path) when
    ``channels`` is 1, RGB (grey repeated) when 3."""
    with Image.open(path) as im:
        grey = im.mode in _GREY_MODES
        im = im.convert("L" if grey and channels == 1 else "RGB")  # decodes: a truncated file raises here
    a = np.array(square_resize(im, size), dtype=np.uint8)  # a writable copy
    t = torch.from_numpy(a[..., None] if a.ndim == 2 else a).permute(2, 0, 1)
    return to_grey(t[None])[0] if channels == 1 and t.shape[0] == 3 else t.contiguous()


def decode(job: tuple, size: int, channels: int) -> torch.Tensor | Failure:
    """What a worker does with a request: uint8 (B, C, size, size), or a :class:`Failure` naming the file."""
    if job[0] == "rows":
        _, path, offset, shape, rows = job
        try:
            x = read_rows(path, offset, shape, rows)
        except OSError as err:
            return Failure(path, str(err.strerror or err))
        return prepare_images(x, size, channels, torch.device("cpu"))
    images = []
    for path in job[1]:
        try:
            images.append(decode_file(path, size, channels))
        except (
            OSError,
            UnidentifiedImageError,
            ValueError,
            SyntaxError,
            Image.DecompressionBombError,
        ) as err:
            return Failure(path, f"{type(err).__name__}: {err}")
    return torch.stack(images)


# ------------------------------------------------------------------------------------------------ the hub


class _Decoder:
    """The loader's dataset, run in the workers: a request in, ``(stream, generation, seq, batch)`` out."""

    def __getitem__(self, request: tuple) -> tuple:
        if request[0] is None:
            return request
        stream, generation, seq, job, size, channels = request
        return (stream, generation, seq, decode(job, size, channels))


def _as_is(item: Any) -> Any:
    return item


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # one core per worker: they run beside the training process
    ignore_stop_signals()


def ignore_stop_signals() -> None:
    """A worker process ignores SIGINT and SIGTERM: Ctrl-C, ``scancel``, ``timeout`` and torchrun signal the
    whole process group, and the training process, which owns shutdown, must finish its step and write its
    checkpoint with the workers still serving it (it stops them after; they leave on their own should it
    die)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


class _Requests:
    """The loader's sampler: an endless series of requests chosen by the hub when the loader asks (in the
    main process)."""

    def __init__(self, hub: StreamHub) -> None:
        self.hub = weakref.proxy(hub)

    def __iter__(self) -> Iterator[tuple]:
        while True:
            yield self.hub._next_request()


NextRequest = Callable[[], "tuple[tuple, Any, torch.Tensor | None] | None"]
"""Makes a stream's next request: ``(job, meta, generator state before the draw)``, None when it has none."""


@dataclass(eq=False)
class _Stream:
    id: int
    what: str
    draw: NextRequest
    size: int
    channels: int
    depth: int
    generation: int = 0
    seq: int = 0
    exhausted: bool = False
    served: int = 0

    def __post_init__(self) -> None:
        self.pending: collections.deque[tuple[int, Any, Any]] = collections.deque()  # (seq, state, meta)
        self.ready: dict[int, Any] = {}


class StreamHub:
    """One ``DataLoader`` with ``workers`` processes serving the streamed tasks of this process (see the
    module docstring). ``workers=0`` decodes in this process (no parallelism; for debugging). Batches are
    copied to ``device`` as they arrive (from pinned memory on CUDA)."""

    def __init__(self, workers: int, device: str | torch.device = "cpu", *, prefetch: int = 2) -> None:
        self.workers, self.device, self.prefetch = workers, torch.device(device), prefetch
        self.timeout = float(os.environ.get(TIMEOUT_ENV, "300"))
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count()
        self._ticks = itertools.count()
        self._wanted: int | None = None
        self._iter: Iterator[Any] | None = None

    # streams ---------------------------------------------------------------------------------------------
    def open(self, draw: NextRequest, *, what: str, size: int, channels: int, depth: int = DEPTH) -> _Stream:
        stream = _Stream(next(self._ids), what, draw, size, channels, depth)
        self._streams[stream.id] = stream
        return stream

    def close(self, stream: _Stream) -> None:
        """Forget ``stream``: what it drew ahead is discarded as it arrives."""
        self._streams.pop(stream.id, None)

    def reset(self, stream: _Stream) -> None:
        """Drop everything ``stream`` drew ahead (its owner has rewound its generator)."""
        stream.generation += 1
        stream.pending.clear()
        stream.ready.clear()
        stream.exhausted = False

    def take(self, stream: _Stream) -> tuple[Any, Any] | None:
        """``(meta, batch)`` of the stream's oldest draw, waiting for it; None when a finite stream is done.

        ``batch`` is a uint8 tensor on the hub's device; :class:`StreamError` for a :class:`Failure` or a lost
        worker."""
        self._wanted = stream.id
        try:
            while True:
                if stream.pending and stream.pending[0][0] in stream.ready:
                    seq, _, meta = stream.pending.popleft()
                    batch = stream.ready.pop(seq)
                    if isinstance(batch, Failure):
                        raise StreamError(
                            f"cannot read {batch.path} while streaming {stream.what} ({batch.reason}); "
                            f"stopped — nothing was saved after the last checkpoint"
                        )
                    return meta, batch
                if stream.exhausted and not stream.pending:
                    return None
                self._route(self._receive(stream))
        finally:
            self._wanted = None

    def _next_request(self) -> tuple:
        """The next request for the loader: the stream waited on first, else the one with the fewest draws
        ahead (least recently served on a tie); a no-op when every stream has drawn ``depth`` ahead."""
        while True:
            open_ = [s for s in self._streams.values() if not s.exhausted and len(s.pending) < s.depth]
            if not open_:
                return (None,)
            s = min(open_, key=lambda s: (s.id != self._wanted, len(s.pending), s.served))
            drawn = s.draw()
            if drawn is None:
                s.exhausted = True
                continue
            job, meta, state = drawn
            s.pending.append((s.seq, state, meta))
            s.seq += 1
            s.served = next(self._ticks)
            return (s.id, s.generation, s.seq - 1, job, s.size, s.channels)

    def _route(self, item: tuple) -> None:
        if item[0] is None:
            return
        sid, generation, seq, batch = item
        stream = self._streams.get(sid)
        if stream is None or stream.generation != generation:
            return  # closed or rewound since it was drawn
        if isinstance(batch, torch.Tensor) and batch.device != self.device:
            # copied ahead of use: queued on the device before the step that needs it
            batch = batch.to(self.device, non_blocking=True)
        stream.ready[seq] = batch

    # the loader ------------------------------------------------------------------------------------------
    def _start(self) -> None:
        loader = DataLoader(
            _Decoder(),  # type: ignore[arg-type]
            batch_size=None,
            sampler=_Requests(self),  # type: ignore[arg-type]
            num_workers=self.workers,
            collate_fn=_as_is,
            pin_memory=self.device.type == "cuda",
            timeout=POLL_S if self.workers else 0,
            worker_init_fn=_worker_init if self.workers else None,
            prefetch_factor=self.prefetch if self.workers else None,
        )
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGCHLD) if main and hasattr(signal, "SIGCHLD") else None
        self._iter = iter(loader)
        if previous is not None:
            # torch's SIGCHLD handler raises in whatever this process is doing when a worker dies (a
            # checkpoint write, a log line); without it the death is found where a batch is waited for.
            signal.signal(signal.SIGCHLD, previous)

    def _receive(self, stream: _Stream) -> tuple:
        if self._iter is None:
            self._start()
        waited = 0.0
        while True:
            try:
                return next(self._iter)  # type: ignore[arg-type]
            except (OSError, EOFError) as err:
                # a batch in shared memory whose worker died before handing it over
                self.shutdown()
                raise StreamError(
                    f"a data-loading worker process died while streaming {stream.what} (its batch was lost: "
                    f"{type(err).__name__}: {err}); stopped — nothing was saved after the last checkpoint"
                ) from None
            except RuntimeError as err:
                text = str(err).splitlines()[0] if str(err) else type(err).__name__
                if "timed out" in text:
                    waited += POLL_S
                    if waited < self.timeout:
                        continue
                    raise StreamError(
                        f"no batch for {stream.what} in {waited:.0f} s (set {TIMEOUT_ENV} to wait longer); "
                        f"stopped — nothing was saved after the last checkpoint"
                    ) from None
                if any(w in text for w in ("exited unexpectedly", "killed by signal", "Pin memory thread")):
                    self.shutdown()
                    raise StreamError(
                        f"a data-loading worker process died while streaming {stream.what} ({text}); "
                        f"stopped — nothing was saved after the last checkpoint"
                    ) from None
                raise

    def shutdown(self) -> None:
        """Stop the worker processes (started again on the next batch asked for)."""
        it, self._iter = self._iter, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        for stream in self._streams.values():
            self.reset(stream)


# ------------------------------------------------------------------------------------------------ tasks


class StreamRows:
    """A task's images on disk, streamed through a :class:`StreamHub` (see the module docstring): the storage
    of streamed placement behind :class:`~largemeta.data.tasks.images.TaskImages`.

    ``source_*`` say where a split's images are (:class:`ArrayRows`, :class:`FileRows`), ``rows_*`` which of
    them belong to the task. Batches are delivered on ``device``; the task's sampler lives on the CPU.
    """

    sampler_device = torch.device("cpu")  # draws are made here, ahead of use

    def __init__(
        self,
        spec: TaskSpec,
        source_train: ArrayRows | FileRows,
        rows_train: np.ndarray,
        source_eval: ArrayRows | FileRows,
        rows_eval: np.ndarray,
        *,
        hub: StreamHub,
        device: str | torch.device = "cpu",
    ) -> None:
        self.spec, self.hub, self.device = spec, hub, torch.device(device)
        self.source_train, self.source_eval = source_train, source_eval
        self.rows_train, self.rows_eval = np.asarray(rows_train, np.int64), np.asarray(rows_eval, np.int64)
        self._stream: _Stream | None = None
        self._batch = 0

    def train_batch(self, sampler: TaskSampler, batch: int) -> tuple[torch.Tensor, Draw]:
        if self._stream is None or batch != self._batch:
            self._open(sampler, batch)
        assert self._stream is not None
        taken = self.hub.take(self._stream)
        assert taken is not None  # a training stream never ends
        draw, x = taken
        return x.to(self.device, non_blocking=True), draw

    def eval_batches(self, batch: int) -> Iterator[tuple[int, torch.Tensor]]:
        starts = iter(range(0, len(self.rows_eval), batch))
        rows, source = self.rows_eval, self.source_eval

        def draw() -> tuple[tuple, Any, None] | None:
            i = next(starts, None)
            if i is None:
                return None
            return source.job(rows[i : i + batch]), i, None

        what = f"task {self.spec.name!r} (eval)"
        stream = self.hub.open(draw, what=what, size=self.spec.image_size, channels=self.spec.channels)
        try:
            while (taken := self.hub.take(stream)) is not None:
                i, x = taken
                yield i, x.to(self.device)
        finally:
            self.hub.close(stream)

    def training_on(self, index: torch.Tensor) -> StreamRows:
        return StreamRows(
            self.spec,
            self.source_train,
            self.rows_train[index.cpu().numpy()],
            self.source_eval,
            self.rows_eval,
            hub=self.hub,
            device=self.device,
        )

    def _open(self, sampler: TaskSampler, batch: int) -> None:
        """(Re)open the training stream for batches of ``batch``, rewinding what was drawn ahead."""
        if self._stream is not None:
            state = self.pending_state()
            self.close()
            if state is not None:
                sampler.generator.set_state(state)
        self._batch = batch
        rows, source = self.rows_train, self.source_train

        # holds the sampler, not the task, so that a dropped task is collected
        def draw() -> tuple[tuple, Draw, torch.Tensor]:
            state = sampler.get_state()
            drawn = sampler.draw(batch)
            return source.job(rows[drawn.indices.numpy()]), drawn, state

        what = f"task {self.spec.name!r}"
        self._stream = self.hub.open(draw, what=what, size=self.spec.image_size, channels=self.spec.channels)
        weakref.finalize(self, self.hub.close, self._stream)

    def pending_state(self) -> torch.Tensor | None:
        pending = self._stream.pending if self._stream is not None else ()
        return pending[0][1] if pending else None

    def drop_pending(self) -> None:
        if self._stream is not None:
            self.hub.reset(self._stream)

    def close(self) -> None:
        if self._stream is not None:
            self.hub.close(self._stream)
            self._stream = None


def stream_arrays(
    spec: TaskSpec, ds: ArrayDataset, *, hub: StreamHub, device: str | torch.device = "cpu", seed: int = 0
) -> TaskImages:
    """The task ``spec`` streamed from a dataset whose images are memory-mapped from a cache entry (only the
    file names and offsets are used)."""
    parts: list[Any] = []
    labels = []
    for split in (spec.train_split, spec.eval_split):
        keep, y = spec.select(ds.class_names, getattr(ds, f"y_{split}"))
        parts += [ArrayRows.of(getattr(ds, f"x_{split}"), f"{ds.name} x_{split}"), keep]
        labels.append(y)
    rows = StreamRows(spec, *parts, hub=hub, device=device)
    return TaskImages(spec, rows, *labels, spec.class_names_of(ds.class_names), seed=seed)


def stream_folder(
    spec: TaskSpec, index: FolderIndex, *, hub: StreamHub, device: str | torch.device = "cpu", seed: int = 0
) -> TaskImages:
    """The task ``spec`` streamed from a listed image folder
    (:func:`~largemeta.data.store.index.index_folder`)."""
    parts: list[Any] = []
    labels = []
    for split in (spec.train_split, spec.eval_split):
        listing = index.splits[split]
        keep, y = spec.select(index.class_names, listing.labels)
        parts += [FileRows(str(index.root), listing), keep]
        labels.append(y)
    rows = StreamRows(spec, *parts, hub=hub, device=device)
    return TaskImages(spec, rows, *labels, spec.class_names_of(index.class_names), seed=seed)
