"""The torchvision-backed parts on the test device (skipped where torchvision does not import): ResNet-18
trained by the CLI, and a dataset read through a torchvision loader into task images on the device."""

from __future__ import annotations

import importlib
import struct

import numpy as np
import pytest
from gpu_device import DEVICE, RESOLVED
from gpu_runs import assert_trained, train

pytestmark = pytest.mark.gpu


def _torchvision():
    try:
        return importlib.import_module("torchvision")
    except Exception as err:  # absent, or built against another torch
        pytest.skip(f"torchvision does not import here: {str(err).splitlines()[0]}")


def test_resnet18_trains_on_the_device(make_suite, tiny_config, tmp_path):
    _torchvision()
    suite = make_suite(size=32)
    cfg = tiny_config(
        suite, device=DEVICE, model="resnet18", width=8, steps=8, k=4, log_every=4, checkpoint_every=8
    )
    train(cfg, tmp_path / "run")
    lines = assert_trained(tmp_path / "run", cfg, RESOLVED)
    assert lines[-1]["meta_updates"] == 8


def _write_idx(path, array: np.ndarray) -> None:
    """An MNIST-format (IDX) file: magic (ubyte, ndim), big-endian sizes, the bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_a_torchvision_loader_feeds_task_images_on_the_device(tmp_path):
    """torchvision.datasets.MNIST reading IDX files written here (download=False: no network), converted by
    largemeta's torchvision source and sampled on the device."""
    _torchvision()
    from largemeta.data.sources.vision import TorchvisionSource
    from largemeta.data.tasks.images import TaskImages
    from largemeta.data.tasks.suite import TaskSpec

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, 28, 28))
        images[np.arange(n), labels * 2, :] = 250  # a class-specific bright row
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    source = TorchvisionSource("MNIST", ({"train": True}, {"train": False}), store=28)
    ds = source.load("mnist_copy", tmp_path, download=False)
    assert ds.x_train.shape == (60, 28, 28, 3) and ds.x_test.shape == (20, 28, 28, 3)
    assert list(ds.y_train[:10]) == list(range(10))
    assert (ds.x_train[3, 6, :, 0] == 250).all()  # label 3's row survived the conversion
    spec = TaskSpec("m", "mnist_copy", image_size=28, channels=3, crop_padding=0, flip=False)
    task = TaskImages.from_arrays(spec, ds, device=DEVICE, seed=0)
    x, y = task.sample_train(16)
    assert x.device.type == DEVICE and x.shape == (16, 3, 28, 28) and int(y.max()) < 10
