"""Data layer: dataset registry and cache, bring-your-own data, tasks and suites, device-resident sampling.

Entry points::

    load_dataset(name_or_path, data_dir=None, root=None) -> ArrayDataset
    load_suite(name_or_path) -> Suite
    TaskData.from_spec(task, device=..., data_dir=...) -> TaskData   # .sample_train(batch), .iter_eval(batch)
"""

from largemeta.data.datasets import DATASETS, ArrayDataset, DatasetSpec, fetch_dataset, load_dataset

__all__ = ["DATASETS", "ArrayDataset", "DatasetSpec", "fetch_dataset", "load_dataset"]
