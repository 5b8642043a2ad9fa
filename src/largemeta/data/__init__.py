"""Data layer: datasets (registry, cache, bring-your-own), tasks and suites, each task's images on a device.

Entry points::

    load_dataset(name_or_path, data_dir=None, root=None) -> ArrayDataset   # host uint8 arrays, cached
    load_suite(name_or_path) -> Suite                      # .meta_train, .meta_test: tuple[TaskSpec, ...]
    loader = TaskLoader(device, "device")                  # or "stream", or "auto" with specs= (and a budget)
    images = loader.task_images(spec, seed=task_seed(0, i))  # each dataset loaded once per loader
    images.sample_train(batch), images.iter_eval(batch)    # a seeded, checkpointable stream; the eval split
    train, query = images.split_query(0.25)                # held-out query pool (FOMAML / iMAML)
    TrainQuerySampler(images, query_fraction=0.25)         # the training loop's sampler of both streams

Vocabulary: a :class:`TaskSpec` is a recipe (a suite entry: dataset, classes, size, augmentation); a
:class:`TaskImages` is that recipe realised: its labels, its :class:`TaskSampler` (the seeded, checkpointable
choice of rows, crops and flips of each batch) and its images, kept on the device (:class:`DeviceRows`) or on
disk and decoded by worker processes as they are drawn (:class:`StreamRows`,
:mod:`largemeta.data.tasks.stream`); a :class:`DatasetSpec` says how a registered dataset is fetched and
converted into an :class:`ArrayDataset`.
"""

from largemeta.data.sources.datasets import DATASETS, Datasets, fetch_dataset, load_dataset
from largemeta.data.sources.fetch import DatasetSpec
from largemeta.data.store.arrays import ArrayDataset
from largemeta.data.store.index import FolderIndex, index_folder
from largemeta.data.tasks.images import DeviceRows, TaskImages, TrainQuerySampler, task_seed
from largemeta.data.tasks.loader import PLACEMENTS, TaskLoader, choose_placement
from largemeta.data.tasks.sampler import TaskSampler
from largemeta.data.tasks.stream import StreamError, StreamHub, StreamRows
from largemeta.data.tasks.suite import Suite, TaskSpec, list_suites, load_suite, resolve_classes

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetSpec",
    "Datasets",
    "DeviceRows",
    "FolderIndex",
    "PLACEMENTS",
    "StreamError",
    "StreamHub",
    "StreamRows",
    "Suite",
    "TaskImages",
    "TaskLoader",
    "TaskSampler",
    "TaskSpec",
    "TrainQuerySampler",
    "choose_placement",
    "fetch_dataset",
    "index_folder",
    "list_suites",
    "load_dataset",
    "load_suite",
    "resolve_classes",
    "task_seed",
]
