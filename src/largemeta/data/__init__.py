"""Data layer: dataset registry and cache, bring-your-own data, tasks and suites, device-resident sampling.

Entry points::

    load_dataset(name_or_path, data_dir=None, root=None) -> ArrayDataset
    load_suite(name_or_path) -> Suite                      # .meta_train, .meta_test: tuple[TaskSpec, ...]
    build_tasks(suite.meta_train, device="cuda", seed=0) -> list[TaskImages]
    TaskImages.from_spec(spec, device=..., seed=...)         # .sample_train(batch), .iter_eval(batch), ...
"""

from largemeta.data.arrays import ArrayDataset, DatasetSpec
from largemeta.data.datasets import DATASETS, fetch_dataset, load_dataset
from largemeta.data.images import TaskImages, build_tasks, task_seed
from largemeta.data.tasks import Suite, TaskSpec, list_suites, load_suite, resolve_classes

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetSpec",
    "Suite",
    "TaskImages",
    "TaskSpec",
    "build_tasks",
    "fetch_dataset",
    "list_suites",
    "load_dataset",
    "load_suite",
    "resolve_classes",
    "task_seed",
]
