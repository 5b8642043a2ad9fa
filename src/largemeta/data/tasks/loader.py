"""Where a run's task images live — decoded on the training device, or streamed from disk — and the one object
that decides it and builds them: :class:`TaskLoader` (used by training and by the meta-test alike).

``data_placement`` (a training config key and an ``evaluate`` flag; "placement" alone, in ``largemeta.train``,
means where the processes run):

* ``device`` — :class:`~largemeta.data.tasks.images.DeviceRows`: every image decoded once, uint8 on the
  training device, batches drawn and augmented there. The fast path; the suite must fit.
* ``stream`` — :class:`~largemeta.data.tasks.stream.StreamRows`: images stay on disk (a registered dataset's
  cache entry, a folder's files) and worker processes decode the rows each batch draws. Any size.
* ``auto`` — ``device`` when the task images that must be resident at once fit the memory budget, else
  ``stream`` (:func:`choose_placement` says why).

The budget is ``memory_budget_gb`` when given, else half of what is free now: the device's free memory on
CUDA, the host's available memory otherwise (``MemAvailable`` of ``/proc/meminfo``). Half, because the
decoded images are not all the run holds (the model, its optimizer states, a folder's decoding buffers) and
memory must remain for the rest of the machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from largemeta.data.sources.datasets import DATASETS, Datasets, looks_like_path, memory_mapped
from largemeta.data.store.arrays import ArrayDataset
from largemeta.data.store.cache import data_dir as resolve_data_dir
from largemeta.data.store.index import FolderIndex, index_folder
from largemeta.data.tasks.images import TaskImages
from largemeta.data.tasks.stream import StreamHub, stream_arrays, stream_folder
from largemeta.data.tasks.suite import TaskSpec
from largemeta.errors import UserError, choice_error

PLACEMENTS = ("auto", "device", "stream")
"""Where a task's decoded images live (``data_placement``): on the device, streamed from disk by worker
processes, or ``auto`` (the device when they fit the memory budget)."""
BUDGET_SHARE = 0.5
"""Share of the free memory that ``auto`` lets decoded task images take when no budget is given."""
MAX_WORKERS = 64


def check_options(data_placement: str, memory_budget_gb: float, stream_workers: int) -> None:
    """A one-line :class:`UserError` for the first bad placement option (named as the config keys are)."""
    if data_placement not in PLACEMENTS:
        raise choice_error("data_placement", data_placement, PLACEMENTS)
    if not 0 <= memory_budget_gb < float("inf"):
        raise UserError(
            f"memory_budget_gb out of range: a finite number >= 0 (0: automatic), got {memory_budget_gb}"
        )
    if isinstance(stream_workers, bool) or not 0 <= stream_workers <= MAX_WORKERS:
        raise UserError(f"stream_workers out of range: 0..{MAX_WORKERS} (0: automatic), got {stream_workers}")


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes free now where ``device``'s images would live, and a description of that memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free memory of {device}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available host memory"
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "free host memory"
    except (ValueError, OSError, AttributeError):  # pragma: no cover - platforms without either
        return 8 << 30, "an assumed 8 GB of host memory"


def memory_budget(device: torch.device, budget_gb: float = 0.0) -> tuple[int, str]:
    """``auto``'s budget in bytes and its source: ``budget_gb`` when > 0, else half the free memory."""
    if budget_gb > 0:
        return int(budget_gb * 2**30), "memory_budget_gb"
    free, what = available_memory(device)
    return int(free * BUDGET_SHARE), f"half the {what}"


def _gb(n: int) -> str:
    """``n`` bytes in GB, or in MB or bytes where GB would round to 0.00 (a tiny budget)."""
    if n >= 2**30 / 200:
        return f"{n / 2**30:.2f} GB"
    if n >= 2**20 / 200:
        return f"{n / 2**20:.2f} MB"
    return f"{n} byte{'s' if n != 1 else ''}"


def choose_placement(
    requested: str, resident_bytes: int, device: torch.device, budget_gb: float = 0.0
) -> tuple[str, str]:
    """``(placement, why)``: ``requested`` unless it is ``auto``, which takes ``device`` when
    ``resident_bytes`` (the decoded images that must be on the device at once) fit the budget."""
    if requested not in PLACEMENTS:
        raise UserError(f"unknown data_placement {requested!r} (valid: {', '.join(PLACEMENTS)})")
    if requested != "auto":
        return requested, f"data_placement = {requested!r}"
    budget, source = memory_budget(device, budget_gb)
    if resident_bytes <= budget:
        return "device", (
            f"data_placement auto: the task images take {_gb(resident_bytes)} decoded, within the budget of "
            f"{_gb(budget)} ({source}): on the device"
        )
    return "stream", (
        f"data_placement auto: the task images take {_gb(resident_bytes)} decoded, over the budget of "
        f"{_gb(budget)} ({source}): streamed from disk"
    )


def default_workers() -> int:
    """Worker processes when ``stream_workers`` is 0: one per core but one (left to training), 1 to 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class TaskLoader:
    """Decides where a run's task images live and builds the images of any of its task specs there, loading
    each dataset once.

    Args:
        device: where batches are delivered.
        data_placement: ``device``, ``stream`` or ``auto``; ``auto`` is resolved here: ``device`` when the
            decoded images of the ``at_once`` largest of ``specs`` (all of them when None) fit the budget
            (``memory_budget_gb``, 0: half the free memory), else ``stream`` (:attr:`why` says why).
        resumed: the data placement a resumed run was trained with (None: a new run). ``auto`` keeps it; on a
            device other than the CPU, where the two placements draw different batches, another one is
            refused.
        data_dir: the dataset cache.
        workers: streaming worker processes (0: :func:`default_workers`).

    After construction :attr:`data_placement` is ``device`` or ``stream``; :attr:`why` is the reason when
    ``auto`` weighed the sizes, else empty.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        data_placement: str = "device",
        *,
        specs: Sequence[TaskSpec] = (),
        at_once: int | None = None,
        memory_budget_gb: float = 0.0,
        resumed: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        workers: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.data_dir = data_dir or None
        self.workers = workers or default_workers()
        self.datasets = Datasets(data_dir=self.data_dir)
        self._hub: StreamHub | None = None
        self._indexes: dict[str, FolderIndex] = {}
        self._mapped: dict[str, ArrayDataset] = {}
        self.why = ""
        if data_placement == "auto" and resumed in ("device", "stream"):
            chosen = resumed
        elif data_placement == "auto":
            size = resident_bytes(self, specs, at_once)
            chosen, self.why = choose_placement("auto", size, self.device, memory_budget_gb)
        else:
            chosen, _ = choose_placement(data_placement, 0, self.device)
        if resumed and chosen != resumed and self.device.type != "cpu":
            raise UserError(
                f"this run was trained with data_placement = {resumed!r}, whose batches differ from "
                f"{chosen!r}'s on {self.device.type}; resume with --set data_placement={resumed}"
            )
        folders = [s.dataset for s in specs if self._is_folder(s.dataset)]
        if resumed and chosen != resumed and folders:
            raise UserError(
                f"this run was trained with data_placement = {resumed!r}; its tasks read the image folder "
                f"{folders[0]!r}, which {chosen!r} decodes differently unless every image is square at the "
                f"task's size; resume with --set data_placement={resumed}"
            )
        self.data_placement = chosen

    @property
    def hub(self) -> StreamHub:
        """The worker pool of streamed tasks (started with the first streamed batch)."""
        if self._hub is None:
            self._hub = StreamHub(self.workers, self.device)
        return self._hub

    # sizes -----------------------------------------------------------------------------------------------
    @staticmethod
    def _is_folder(name: str) -> bool:
        return name not in DATASETS and looks_like_path(name) and Path(name).expanduser().is_dir()

    def _index(self, name: str) -> FolderIndex:
        if name not in self._indexes:
            self._indexes[name] = index_folder(Path(name), resolve_data_dir(self.data_dir))
        return self._indexes[name]

    def decoded_bytes(self, spec: TaskSpec) -> int:
        """What ``spec``'s images take decoded at its size (what device placement holds), without decoding:
        counts from the dataset's labels or the folder's listing."""
        if self._is_folder(spec.dataset):
            index = self._index(spec.dataset)
            names, labels = index.class_names, {s: index.splits[s].labels for s in index.splits}
        else:
            ds = self.datasets.get(spec.dataset)
            names, labels = ds.class_names, {"train": ds.y_train, "test": ds.y_test}
        count = sum(len(spec.select(names, labels[s])[0]) for s in (spec.train_split, spec.eval_split))
        return count * spec.channels * spec.image_size**2

    # tasks -----------------------------------------------------------------------------------------------
    def task_images(self, spec: TaskSpec, seed: int = 0) -> TaskImages:
        """``spec``'s images placed as :attr:`data_placement` says, sampling from ``seed``."""
        if self.data_placement == "device":
            return TaskImages.from_arrays(
                spec, self.datasets.get(spec.dataset), device=self.device, seed=seed
            )
        if self._is_folder(spec.dataset):
            return stream_folder(spec, self._index(spec.dataset), hub=self.hub, device=self.device, seed=seed)
        if spec.dataset not in self._mapped:
            loaded = self.datasets.get(spec.dataset)
            self._mapped[spec.dataset] = memory_mapped(spec.dataset, self.data_dir, loaded)
        ds = self._mapped[spec.dataset]
        return stream_arrays(spec, ds, hub=self.hub, device=self.device, seed=seed)

    def forget_datasets(self) -> None:
        """Drop the loaded datasets (host arrays, memory maps): the tasks built so far keep what they need,
        and a later task loads its dataset again."""
        self.datasets = Datasets(data_dir=self.data_dir)
        self._mapped.clear()

    def close(self) -> None:
        """Stop the streaming worker processes, if any were started."""
        if self._hub is not None:
            self._hub.shutdown()


def resident_bytes(loader: TaskLoader, specs: Sequence[TaskSpec], at_once: int | None = None) -> int:
    """Decoded bytes of the ``at_once`` largest of ``specs`` (all of them when None): what must be resident
    together when only ``at_once`` tasks are active (a task pool loads a drawn task's images lazily)."""
    sizes = sorted((loader.decoded_bytes(s) for s in specs), reverse=True)
    return sum(sizes if at_once is None else sizes[:at_once])
