"""Data layer: datasets (registry, cache, bring-your-own), tasks and suites, each task's images on a device.

Entry points::

    load_dataset(name_or_path, data_dir=None, root=None) -> ArrayDataset   # host uint8 arrays, cached
    load_suite(name_or_path) -> Suite                      # .meta_train, .meta_test: tuple[TaskSpec, ...]
    build_tasks(suite.meta_train, device="cuda", seed=0) -> list[TaskImages]
    Datasets(data_dir=None).task_images(spec, device=..., seed=...) -> TaskImages   # each dataset loaded once
    TaskImages.from_spec(spec, device=..., seed=...)       # .sample_train(batch), .iter_eval(batch), ...
    train, query = images.split_query(0.25)                # held-out query pool (FOMAML / iMAML)
    TrainQuerySampler(images, query_fraction=0.25)         # the training loop's sampler of both streams
    TaskLoader(device, placement="stream").task_images(spec, seed)  # images streamed from disk instead

Vocabulary: a :class:`TaskSpec` is a recipe (a suite entry: dataset, classes, size, augmentation); a
:class:`TaskImages` is that recipe realised (its images on a device plus a seeded, checkpointable minibatch
stream); a :class:`StreamImages` offers the same from disk, decoded by worker processes as it samples
(:mod:`largemeta.data.stream`); a :class:`DatasetSpec` says how a registered dataset is fetched and converted
into an :class:`ArrayDataset`.
"""

from largemeta.data.arrays import ArrayDataset, DatasetSpec
from largemeta.data.datasets import DATASETS, fetch_dataset, load_dataset
from largemeta.data.images import (
    Datasets,
    SampledImages,
    TaskImages,
    TrainQuerySampler,
    build_tasks,
    task_seed,
)
from largemeta.data.index import FolderIndex, index_folder
from largemeta.data.placement import PLACEMENTS, TaskLoader, choose_placement
from largemeta.data.stream import StreamError, StreamHub, StreamImages
from largemeta.data.tasks import Suite, TaskSpec, list_suites, load_suite, resolve_classes

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetSpec",
    "Datasets",
    "FolderIndex",
    "PLACEMENTS",
    "SampledImages",
    "StreamError",
    "StreamHub",
    "StreamImages",
    "Suite",
    "TaskImages",
    "TaskLoader",
    "TaskSpec",
    "TrainQuerySampler",
    "build_tasks",
    "choose_placement",
    "fetch_dataset",
    "index_folder",
    "list_suites",
    "load_dataset",
    "load_suite",
    "resolve_classes",
    "task_seed",
]
