"""A task's images and its seeded minibatch stream: :class:`TaskImages`, with its device-resident storage.

A :class:`TaskImages` is a :class:`~largemeta.data.tasks.suite.TaskSpec` realised: labels renumbered 0..k-1, a
:class:`~largemeta.data.tasks.sampler.TaskSampler` (which rows, crops and flips each batch takes, and its
state) and a storage that fetches the rows it names:

* :class:`DeviceRows` (here): the task's images as uint8 tensors (N, C, H, W) on the training device,
  resized once to the task's size and restricted to its classes. Batches are drawn and augmented on that
  device, so no host work and no host-device copy happens per step. Grey images stay 1 channel in memory and
  become 3 only in the batch when the task asks for 3.
* :class:`~largemeta.data.tasks.stream.StreamRows`: the images stay on disk and worker processes decode the
  rows each batch draws.

Trainer API::

    task = TaskLoader("cuda", "device").task_images(spec, seed=0)   # or TaskImages.from_arrays(spec, ds, ...)
    task.num_classes          # k, labels are 0..k-1
    task.image_shape          # (C, H, W) of the batches
    x, y = task.sample_train(128)        # x float32 (B, C, H, W) in [-1, 1], augmented; y int64 (B,)
    for x, y in task.iter_eval(512):     # the eval split in order, no augmentation
        ...
    small = task.subsample(n_per_class=50, seed=1)   # limited-data experiments; or total=500
    state = task.state_dict()            # sampling state; checkpoint it with the model
    task.load_state_dict(state)          # the next batches are exactly those that followed the save
    train, query = task.split_query(0.25)   # held-out query pool for FOMAML / iMAML

To build many tasks, loading each dataset once (e.g. QuickDraw for several class groups), use
:class:`~largemeta.data.tasks.loader.TaskLoader` (``data_placement="device"`` keeps the images on the device).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from largemeta.data.store.arrays import ArrayDataset
from largemeta.data.tasks.augment import apply_augmentation, normalize, resize_uint8, to_grey
from largemeta.data.tasks.sampler import Draw, TaskSampler
from largemeta.data.tasks.suite import TaskSpec
from largemeta.errors import UserError


def prepare_images(x: np.ndarray, size: int, channels: int, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) host array -> uint8 (N, C', size, size) on ``device`` (C' = 1 if grey or asked).

    Per image, so a batch of rows prepared by a streaming worker equals the same rows of a whole prepared
    split."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2)
    if channels == 1 and t.shape[1] == 3:
        t = to_grey(t)
    return resize_uint8(t.contiguous(), size)


class Rows(Protocol):
    """Where a task's images are kept; it fetches the rows a :class:`TaskSampler` draws, and nothing else.

    ``sampler_device``: where the task's sampler (and the labels it indexes) lives.
    """

    device: torch.device

    @property
    def sampler_device(self) -> torch.device: ...

    def train_batch(self, sampler: TaskSampler, batch: int) -> tuple[torch.Tensor, Draw]:
        """The sampler's next draw and its rows: uint8 (B, C, H, W) on :attr:`device`, not augmented."""
        ...

    def eval_batches(self, batch: int) -> Iterator[tuple[int, torch.Tensor]]:
        """The eval split in order: ``(start, uint8 rows on the device)``."""
        ...

    def training_on(self, index: torch.Tensor) -> Rows:
        """The same storage, training on the rows at ``index`` (on :attr:`sampler_device`)."""
        ...

    def pending_state(self) -> torch.Tensor | None:
        """The sampler's state before the oldest draw made ahead and not used yet (None: none is)."""
        ...

    def drop_pending(self) -> None:
        """Forget the draws made ahead (the sampler was rewound)."""
        ...

    def close(self) -> None:
        """Release what the storage holds outside this object."""
        ...


class DeviceRows:
    """A task's train and eval images, uint8 (N, C, H, W) tensors on one device; batches drawn there."""

    def __init__(self, x_train: torch.Tensor, x_eval: torch.Tensor) -> None:
        if x_train.dtype != torch.uint8 or x_train.ndim != 4:
            raise ValueError(
                f"x_train must be uint8 (N, C, H, W), got {x_train.dtype} {tuple(x_train.shape)}"
            )
        self.x_train, self.x_eval = x_train, x_eval
        self.device = x_train.device

    @property
    def sampler_device(self) -> torch.device:
        return self.device

    def train_batch(self, sampler: TaskSampler, batch: int) -> tuple[torch.Tensor, Draw]:
        draw = sampler.draw(batch)
        return self.x_train[draw.indices], draw

    def eval_batches(self, batch: int) -> Iterator[tuple[int, torch.Tensor]]:
        for i in range(0, self.x_eval.shape[0], batch):
            yield i, self.x_eval[i : i + batch]

    def training_on(self, index: torch.Tensor) -> DeviceRows:
        return DeviceRows(self.x_train[index], self.x_eval)

    def pending_state(self) -> None:
        return None  # drawn when used

    def drop_pending(self) -> None:
        pass

    def close(self) -> None:
        pass


class TaskImages:
    """A task's labels, class names, seeded minibatch stream (its :class:`TaskSampler`) and images (its
    :class:`Rows`, on the device or streamed): what the training loop and the meta-test draw batches from.

    Not to be confused with :class:`~largemeta.data.tasks.suite.TaskSpec` (the recipe, a suite entry) or a
    model-side task (:class:`largemeta.models.task.ImageTask`, which draws its batches from one of these).

    Args:
        spec: the recipe.
        rows: the storage.
        y_train: labels (0..k-1) of the training rows, shape (N_train,); moved to ``rows.sampler_device``.
        y_eval: labels (0..k-1) of the eval rows, shape (N_eval,); moved there too.
        class_names: the task's classes, in label order.
        seed: the sampling seed.
    """

    def __init__(
        self,
        spec: TaskSpec,
        rows: Rows,
        y_train: torch.Tensor | np.ndarray,
        y_eval: torch.Tensor | np.ndarray,
        class_names: Sequence[str],
        *,
        seed: int = 0,
    ) -> None:
        if len(y_train) == 0:
            raise UserError(f"task {spec.name!r} has no training images")
        self.spec, self.rows, self.seed = spec, rows, seed
        self.device = rows.device
        where = rows.sampler_device
        self.y_train = torch.as_tensor(y_train, dtype=torch.int64).to(where)
        self.y_eval = torch.as_tensor(y_eval, dtype=torch.int64).to(where)
        self.class_names = tuple(class_names)
        self.sampler = TaskSampler(
            len(self.y_train), padding=spec.crop_padding, flip=spec.flip, seed=seed, device=where
        )

    @classmethod
    def from_arrays(
        cls, spec: TaskSpec, ds: ArrayDataset, *, device: str | torch.device = "cpu", seed: int = 0
    ) -> TaskImages:
        """The task ``spec`` on ``device``: its classes selected from ``ds``, resized once, moved there."""
        dev = torch.device(device)
        parts = {}
        for role, split in (("train", spec.train_split), ("eval", spec.eval_split)):
            keep, labels = spec.select(ds.class_names, getattr(ds, f"y_{split}"))
            x = prepare_images(getattr(ds, f"x_{split}")[keep], spec.image_size, spec.channels, dev)
            parts[role] = (x, labels)
        rows = DeviceRows(parts["train"][0], parts["eval"][0])
        names = spec.class_names_of(ds.class_names)
        return cls(spec, rows, parts["train"][1], parts["eval"][1], names, seed=seed)

    # -------------------------------------------------------------------------------- properties

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the batches this task yields."""
        return (self.spec.channels, self.spec.image_size, self.spec.image_size)

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_eval(self) -> int:
        return int(self.y_eval.shape[0])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, classes={self.num_classes}, train={self.num_train}, "
            f"eval={self.num_eval}, shape={self.image_shape}, device={self.device}, "
            f"storage={type(self.rows).__name__})"
        )

    # -------------------------------------------------------------------------------- batches

    def sample_train(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An augmented training minibatch: x float32 (B, C, H, W) in [-1, 1], y int64 (B,)."""
        x, draw = self.rows.train_batch(self.sampler, batch_size)
        y = self.y_train[draw.indices]
        if draw.indices.device != self.device:  # drawn on the CPU, ahead (streamed)
            y, draw = y.to(self.device), draw.to(self.device)
        spec = self.spec
        x = apply_augmentation(
            x, padding=spec.crop_padding, offsets=draw.offsets, mask=draw.mask, channels=spec.channels
        )
        return x, y

    def iter_eval(self, batch_size: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The eval split in order, normalized, without augmentation."""
        for i, x in self.rows.eval_batches(batch_size):
            yield normalize(x, self.spec.channels), self.y_eval[i : i + batch_size].to(self.device)

    def close(self) -> None:
        """Release what the task holds outside this object (nothing, unless it streams)."""
        self.rows.close()

    # -------------------------------------------------------------------------------- subsets

    def _training_on(self, index: torch.Tensor, *, seed: int) -> TaskImages:
        """A copy whose training images are those at ``index`` (eval split shared), sampling from ``seed``."""
        index = index.to(self.rows.sampler_device)
        return TaskImages(
            self.spec,
            self.rows.training_on(index),
            self.y_train[index],
            self.y_eval,
            self.class_names,
            seed=seed,
        )

    def subsample(
        self, n_per_class: int | None = None, total: int | None = None, seed: int = 0
    ) -> TaskImages:
        """A copy training on a class-balanced subset: ``n_per_class`` per class, or ``total`` images.

        With ``total`` the classes take turns (a seeded shuffle within each class), so per-class counts differ
        by at most one where classes are large enough. The eval split and the sampling seed are unchanged.
        """
        if (n_per_class is None) == (total is None):
            raise UserError("subsample needs exactly one of n_per_class and total")
        limit = n_per_class if n_per_class is not None else total
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise UserError(f"subsample size must be a positive integer, got {limit!r}")
        rng = np.random.default_rng(seed)
        y = self.y_train.cpu().numpy()
        per_class = [np.flatnonzero(y == c) for c in range(self.num_classes)]
        per_class = [idx[rng.permutation(len(idx))] for idx in per_class]
        if n_per_class is not None:
            smallest = min(len(p) for p in per_class)
            if n_per_class > smallest:
                raise UserError(
                    f"task {self.name!r}: n_per_class={n_per_class} exceeds its smallest class "
                    f"({smallest} training images)"
                )
            chosen = np.concatenate([p[:n_per_class] for p in per_class])
        else:
            if total > self.num_train:
                raise UserError(
                    f"task {self.name!r}: total={total} exceeds its {self.num_train} training images"
                )
            # Round-robin over classes: rank of each image within its class, then stable sort by rank.
            ranks = np.concatenate([np.arange(len(p)) for p in per_class])
            order = np.concatenate(per_class)
            chosen = order[np.argsort(ranks, kind="stable")][:total]
        keep = torch.from_numpy(np.sort(chosen))
        return self._training_on(keep, seed=self.seed)

    def split_query(self, fraction: float, seed: int | None = None) -> tuple[TaskImages, TaskImages]:
        """Hold out a share of the training images as a query pool: ``(train, query)``, disjoint copies.

        First-order MAML and iMAML score the adapted weights on a batch the inner loop did not train on, so
        the query batches come from their own pool. Of the task's ``n`` training images,
        ``n_q = max(1, round(n * fraction))`` are held out: the first ``n_q`` entries of
        ``torch.randperm(n)`` drawn from a CPU generator seeded with ``seed`` (default: this task's seed), so
        the split is the same on every device. Each copy keeps its images in their original order and shares
        the eval split.

        Both copies start fresh sampling streams: the train copy seeded with this task's seed, the query copy
        with that seed + 1, so query draws never disturb the training stream (the shift-error probe replays
        it). ``UserError`` when the split would leave no training image.
        """
        if isinstance(fraction, bool) or not 0 < fraction < 1:
            raise UserError(f"task {self.name!r}: the query fraction must lie in (0, 1), got {fraction!r}")
        n = self.num_train
        n_query = max(1, int(round(n * fraction)))
        if n_query >= n:
            raise UserError(f"task {self.name!r}: {n} training images are too few to hold out a query share")
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        perm = torch.randperm(n, generator=g)
        query, train = perm[:n_query].sort().values, perm[n_query:].sort().values
        return self._training_on(train, seed=self.seed), self._training_on(query, seed=self.seed + 1)

    # ---------------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Sampling state to checkpoint: the generator state (a CPU uint8 tensor; from before the oldest batch
        drawn ahead and not used yet, when the storage draws ahead) and the seed."""
        return self.sampler.state_dict(self.rows.pending_state())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume sampling exactly where :meth:`state_dict` was taken."""
        self.sampler.load_state_dict(state)
        self.seed = self.sampler.seed
        self.rows.drop_pending()


def task_seed(seed: int, index: int) -> int:
    """Independent per-task seed derived from a run's ``seed`` and the task's position."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class TrainQuerySampler:
    """A task's minibatch sampler for the training loop (a ``BatchSource``): its training stream and, for
    meta-gradients that read held-out batches (FOMAML, iMAML), a query stream from a held-out share of its
    training images (:meth:`TaskImages.split_query`: fixed by the task's seed; the two streams have their own
    generators, so replaying the training stream — the shift-error probe — is not disturbed by query
    draws)."""

    def __init__(self, images: TaskImages, query_fraction: float | None = None) -> None:
        self.train, self.query = images.split_query(query_fraction) if query_fraction else (images, None)
        if query_fraction:
            images.close()  # only its two parts sample

    def sample_train(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train.sample_train(batch)

    def sample_query(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.query is None:
            raise RuntimeError(
                "this task has no query split (only meta-gradients that use query batches have one)"
            )
        return self.query.sample_train(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train.state_dict(), "query": self.query.state_dict() if self.query else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train.load_state_dict(state["train"])
        if self.query is not None and state.get("query") is not None:
            self.query.load_state_dict(state["query"])

    def close(self) -> None:
        """Release both streams' resources (streamed tasks: their place in the worker pool)."""
        self.train.close()
        if self.query is not None:
            self.query.close()
