"""Device-resident sampling and augmentation: determinism, checkpointing, shapes, and loop oracles."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from largemeta.data.store.arrays import ArrayDataset
from largemeta.data.tasks.augment import crop_at, flip_where, normalize, resize_uint8
from largemeta.data.tasks.images import DeviceRows, TaskImages
from largemeta.data.tasks.sampler import TaskSampler
from largemeta.data.tasks.suite import TaskSpec
from largemeta.errors import UserError


def toy_dataset(n_per_class=6, classes=4, side=10, channels=1) -> ArrayDataset:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.integers(0, 256, (len(y), side, side, channels), dtype=np.uint8)
    return ArrayDataset("toy", x, y, x[::2].copy(), y[::2].copy(), tuple(f"k{i}" for i in range(classes)))


def toy_task(seed: int = 0, rgb: bool = False, **kw) -> TaskImages:
    spec = TaskSpec(**{"name": "t", "dataset": "toy", "image_size": 10, "channels": 1, **kw})
    return TaskImages.from_arrays(spec, toy_dataset(channels=3 if rgb else 1), seed=seed)


def test_shapes_ranges_and_device():
    task = toy_task(channels=3, image_size=12, crop_padding=2)
    x, y = task.sample_train(16)
    assert x.shape == (16, 3, 12, 12) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert y.dtype == torch.int64 and y.shape == (16,) and 0 <= int(y.min()) and int(y.max()) < 4
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.equal(x[:, 0], x[:, 1])  # grey repeated to 3 channels
    assert task.image_shape == (3, 12, 12) and task.num_classes == 4
    assert task.rows.x_train.shape[1] == 1  # still stored as one channel


def test_same_seed_same_batches_and_other_seed_differs():
    a, b, c = toy_task(seed=1), toy_task(seed=1), toy_task(seed=2)
    xa, ya = a.sample_train(32)
    xb, yb = b.sample_train(32)
    xc, _ = c.sample_train(32)
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and not torch.equal(xa, xc)


def test_state_dict_round_trip_resumes_the_stream():
    task = toy_task()
    task.sample_train(8)
    state = task.state_dict()
    first = [task.sample_train(8) for _ in range(3)]
    other = toy_task(seed=99)
    other.load_state_dict(state)
    task.load_state_dict(state)
    for (x1, y1), (x2, y2), (x3, y3) in zip(
        first,
        [task.sample_train(8) for _ in range(3)],
        [other.sample_train(8) for _ in range(3)],
        strict=True,
    ):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(x1, x3) and torch.equal(y1, y3)


def test_eval_iterator_is_the_eval_split_unaugmented():
    task = toy_task(crop_padding=4)
    batches = list(task.iter_eval(5))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert [len(b[1]) for b in batches] == [5, 5, 2] and torch.equal(y, task.y_eval)
    assert torch.allclose(x, task.rows.x_eval.float() / 127.5 - 1, atol=1e-6)


def test_class_subset_relabels_in_given_order():
    ds = toy_dataset()
    spec = TaskSpec("t", "toy", ("k3", "k1"), image_size=10, channels=1)
    task = TaskImages.from_arrays(spec, ds)
    assert task.class_names == ("k3", "k1") and task.num_train == 12
    # label 0 of the task is dataset class 3
    first = torch.from_numpy(ds.x_train[ds.y_train == 3]).permute(0, 3, 1, 2)
    assert torch.equal(task.rows.x_train[task.y_train == 0], first)


def test_unknown_class_in_task():
    with pytest.raises(UserError, match=r"task 't' \(toy\): unknown class 'k9'"):
        TaskImages.from_arrays(TaskSpec("t", "toy", ("k9",)), toy_dataset())


def test_subsample():
    task = toy_task()
    small = task.subsample(n_per_class=2, seed=0)
    assert small.y_train.bincount().tolist() == [2, 2, 2, 2] and small.num_eval == task.num_eval
    assert small.y_train.tolist() == task.subsample(n_per_class=2, seed=0).y_train.tolist()
    assert task.subsample(total=6).y_train.bincount().tolist() == [2, 2, 1, 1]
    with pytest.raises(UserError, match="exceeds its smallest class"):
        task.subsample(n_per_class=7)
    with pytest.raises(UserError, match="exactly one"):
        task.subsample()


def test_rgb_to_grey_and_resize():
    task = toy_task(rgb=True, channels=1, image_size=5)
    assert task.rows.x_train.shape == (24, 1, 5, 5) and task.rows.x_train.dtype == torch.uint8


def crop_loop(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """The plain per-sample oracle for :func:`crop_at`."""
    h, w = x.shape[-2:]
    padded = F.pad(x, [padding] * 4)
    return torch.stack(
        [
            padded[i, :, t : t + h, l_ : l_ + w]
            for i, (t, l_) in enumerate(zip(top.tolist(), left.tolist(), strict=True))
        ]
    )


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 6),
    c=st.sampled_from([1, 3]),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    padding=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_vectorized_crop_matches_loop(b, c, h, w, padding, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)
    top, left = torch.randint(0, 2 * padding + 1, (2, b), generator=g)
    assert torch.equal(crop_at(x, padding, top, left), crop_loop(x, padding, top, left))


def test_random_crop_covers_all_offsets_and_keeps_shape():
    x = torch.ones(500, 1, 4, 4, dtype=torch.uint8)
    top, left = TaskSampler(500, padding=2, flip=False, seed=0).draw(500).offsets
    out = crop_at(x, 2, top, left)
    assert out.shape == x.shape
    # zeros visible in a crop tell its offset; all 25 offsets occur in 500 draws
    patterns = {tuple(o.flatten().tolist()) for o in out}
    assert len(patterns) == 25


def test_flip_matches_loop():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.uint8).view(2, 1, 2, 3)
    mask = torch.tensor([True, False])
    out = flip_where(x, mask)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


def test_normalize_values():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 1, 1, 3)
    assert torch.allclose(normalize(x), torch.tensor([-1.0, 1.0, 51 / 255 * 2 - 1]).view(1, 1, 1, 3))


def test_resize_uint8_keeps_constant_images():
    x = torch.full((3, 1, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(resize_uint8(x, 28), torch.full((3, 1, 28, 28), 77, dtype=torch.uint8))
    assert torch.equal(resize_uint8(x, 3, chunk=2), torch.full((3, 1, 3, 3), 77, dtype=torch.uint8))


@pytest.mark.network
def test_offline_suite_tasks_on_real_data(builtin):
    from largemeta.data.tasks.suite import load_suite

    suite = load_suite("offline")
    digits = next(t for t in suite.meta_test if t.dataset == "digits")
    task = TaskImages.from_arrays(digits, builtin("digits"))
    x, y = task.sample_train(128)
    assert x.shape == (128, 1, 28, 28) and task.num_classes == 10
    qd = TaskImages.from_arrays(suite.meta_test[0], builtin("quickdraw"))
    assert qd.num_classes == 35 and qd.num_train == 35 * 80 and qd.num_eval == 35 * 20


@pytest.mark.network
def test_a_loader_loads_each_dataset_once_and_seeds_differ(builtin, monkeypatch):
    import largemeta.data.sources.datasets as datasets
    from largemeta.data import TaskLoader, load_suite, task_seed

    def build_tasks(specs, seed):
        loader = TaskLoader("cpu", "device")
        return [loader.task_images(spec, seed=task_seed(seed, i)) for i, spec in enumerate(specs)]

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kw: calls.append(name) or builtin(name))
    tasks = build_tasks(load_suite("offline").meta_train, seed=5)
    assert calls == ["mnist", "fashion_mnist", "quickdraw"]
    assert [t.num_classes for t in tasks] == [10, 10, 80, 80, 80]
    assert len({t.seed for t in tasks}) == 5
    again = build_tasks(load_suite("offline").meta_train[:1], seed=5)
    assert torch.equal(again[0].sample_train(16)[0], tasks[0].sample_train(16)[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_task_images_live_on_cuda():
    spec = TaskSpec("t", "toy", image_size=12, channels=3, crop_padding=2)
    task = TaskImages.from_arrays(spec, toy_dataset(), device="cuda", seed=3)
    assert task.rows.x_train.is_cuda and task.sampler.generator.device.type == "cuda"
    state = task.state_dict()
    x, y = task.sample_train(64)
    assert x.is_cuda and y.is_cuda and x.shape == (64, 3, 12, 12)
    task.load_state_dict(state)
    x2, _ = task.sample_train(64)
    assert torch.equal(x, x2)
    g = torch.Generator(device="cuda").manual_seed(0)
    xs = torch.randint(0, 256, (8, 3, 7, 7), dtype=torch.uint8, device="cuda", generator=g)
    top, left = torch.randint(0, 5, (2, 8), device="cuda", generator=g)
    assert torch.equal(crop_at(xs, 2, top, left).cpu(), crop_loop(xs.cpu(), 2, top.cpu(), left.cpu()))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batches=st.lists(st.integers(1, 64), min_size=1, max_size=6),
    cut=st.integers(0, 5),
    padding=st.integers(0, 4),
    flip=st.booleans(),
)
def test_sampler_properties(seed, batches, cut, padding, flip):
    """Indices in range; the same seed gives the same stream; a saved and restored state continues it
    exactly."""
    a = toy_task(seed, crop_padding=padding, flip=flip)
    b = toy_task(seed, crop_padding=padding, flip=flip)
    cut = min(cut, len(batches))
    for n in batches[:cut]:
        xa, ya = a.sample_train(n)
        xb, yb = b.sample_train(n)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.shape == (n, 1, 10, 10) and int(ya.min()) >= 0 and int(ya.max()) < a.num_classes
    state = a.state_dict()
    expected = [a.sample_train(n) for n in batches[cut:]]
    c = toy_task(seed + 1, crop_padding=padding, flip=flip)  # another seed, then the saved state
    c.load_state_dict(state)
    for n, (x, y) in zip(batches[cut:], expected, strict=True):
        xc, yc = c.sample_train(n)
        assert torch.equal(x, xc) and torch.equal(y, yc)
    idx = a.sampler.draw(max(batches)).indices
    assert int(idx.min()) >= 0 and int(idx.max()) < a.num_train


# ------------------------------------------------------------------------- held-out query split


def v01_trainer_split(data: TaskImages, query_fraction: float, seed: int):
    """The oracle: the trainer's query split of v0.1 (``train/trainer.py``, ``TaskSampler.__init__``),
    verbatim but for returning the indices too. Every φ hash of a FOMAML / iMAML run rests on it."""
    n = data.num_train
    n_query = max(1, int(round(n * query_fraction)))
    if n_query >= n:
        raise UserError(f"task {data.name!r}: {n} training images are too few to hold out a query share")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(data.device)
    q, t = perm[:n_query].sort().values, perm[n_query:].sort().values
    x, args = data.rows.x_train, (data.y_eval, data.class_names)
    train = TaskImages(data.spec, DeviceRows(x[t], data.rows.x_eval), data.y_train[t], *args, seed=data.seed)
    query = TaskImages(
        data.spec, DeviceRows(x[q], data.rows.x_eval), data.y_train[q], *args, seed=data.seed + 1
    )
    return t, q, train, query


def unique_images_task(n: int, seed: int, **kw) -> TaskImages:
    """A task whose training image i is the constant image i (so an image tells its index)."""
    y = np.arange(n) % 3
    x = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, 6, 6, 1), np.uint8)
    ds = ArrayDataset("u", x, y, x[:5].copy(), y[:5].copy(), ("a", "b", "c"))
    spec = TaskSpec(**{"name": "u", "dataset": "u", "image_size": 6, "channels": 1, **kw})
    return TaskImages.from_arrays(spec, ds, seed=seed)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 200),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 2),
    padding=st.integers(0, 3),
    flip=st.booleans(),
    batches=st.lists(st.integers(1, 40), min_size=1, max_size=4),
)
def test_split_query_is_the_v01_trainer_split(n, fraction, seed, padding, flip, batches):
    """Same held-out indices, same images, same seeds and the same batches from both streams."""
    data = unique_images_task(n, seed, crop_padding=padding, flip=flip)
    try:
        t, q, want_train, want_query = v01_trainer_split(data, fraction, seed)
    except UserError as err:
        with pytest.raises(UserError, match=re.escape(str(err))):
            data.split_query(fraction, seed)
        return
    train, query = data.split_query(fraction, seed)
    assert torch.equal(train.rows.x_train[:, 0, 0, 0].long(), t) and torch.equal(
        query.rows.x_train[:, 0, 0, 0].long(), q
    )
    for got, want in ((train, want_train), (query, want_query)):
        assert torch.equal(got.rows.x_train, want.rows.x_train) and torch.equal(got.y_train, want.y_train)
        assert got.rows.x_eval is data.rows.x_eval and got.seed == want.seed
        assert torch.equal(got.state_dict()["generator"], want.state_dict()["generator"])
        for b in batches:
            (xg, yg), (xw, yw) = got.sample_train(b), want.sample_train(b)
            assert torch.equal(xg, xw) and torch.equal(yg, yw)
    assert (train.seed, query.seed) == (data.seed, data.seed + 1)


def test_split_query_partitions_the_training_images():
    data = unique_images_task(20, seed=7)
    train, query = data.split_query(0.25)  # seed defaults to the task's seed
    same = data.split_query(0.25, seed=7)
    assert torch.equal(train.rows.x_train, same[0].rows.x_train) and torch.equal(
        query.rows.x_train, same[1].rows.x_train
    )
    held, kept = query.rows.x_train[:, 0, 0, 0].tolist(), train.rows.x_train[:, 0, 0, 0].tolist()
    assert len(held) == 5 and held == sorted(held) and kept == sorted(kept)
    assert sorted(held + kept) == list(range(20))
    assert data.split_query(0.25, seed=8)[1].rows.x_train[:, 0, 0, 0].tolist() != held
    assert data.num_train == 20 and data.seed == 7  # the task itself is untouched


def test_split_query_refuses_what_leaves_nothing():
    with pytest.raises(UserError, match=r"task 'u': 1 training images are too few to hold out a query share"):
        unique_images_task(1, seed=0).split_query(0.25)
    with pytest.raises(UserError, match=r"task 'u': 2 training images are too few"):
        unique_images_task(2, seed=0).split_query(0.75)
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(UserError, match=r"query fraction must lie in \(0, 1\)"):
            unique_images_task(10, seed=0).split_query(bad)


# --------------------------------------------------------------------------- load each dataset once


def test_datasets_loads_each_dataset_once(monkeypatch, tmp_path):
    import largemeta.data.sources.datasets as datasets_module
    from largemeta.data import Datasets

    calls = []

    def fake_load(name, **kw):
        calls.append((name, kw))
        return toy_dataset(classes=5 if name == "five" else 4)

    monkeypatch.setattr(datasets_module, "load_dataset", fake_load)
    datasets = Datasets(data_dir=tmp_path, root="/copy")
    specs = [
        TaskSpec(f"t{i}", name, image_size=10, channels=1) for i, name in enumerate(["toy", "five", "toy"])
    ]
    tasks = [TaskImages.from_arrays(s, datasets.get(s.dataset), seed=i) for i, s in enumerate(specs)]
    assert calls == [
        ("toy", {"data_dir": tmp_path, "root": "/copy"}),
        ("five", {"data_dir": tmp_path, "root": "/copy"}),
    ]
    assert datasets.get("toy") is datasets.get("toy") and len(calls) == 2
    assert [t.num_classes for t in tasks] == [4, 5, 4] and [t.seed for t in tasks] == [0, 1, 2]
    want = TaskImages.from_arrays(specs[2], toy_dataset(), seed=2)
    assert torch.equal(tasks[2].rows.x_train, want.rows.x_train) and torch.equal(
        tasks[2].sample_train(8)[0], want.sample_train(8)[0]
    )


# ------------------------------------------------------------------------------- the sampler's stream


def v01_sample_train(data: TaskImages, generator: torch.Generator, batch: int):
    """The oracle: ``TaskImages.sample_train`` as it was before the sampler was its own object (indices,
    then the crop offsets and the flip mask drawn as the batch was augmented), verbatim but for the names.
    Every φ hash rests on this order of draws."""
    spec, x_train = data.spec, data.rows.x_train
    idx = torch.randint(data.num_train, (batch,), device=x_train.device, generator=generator)
    x = x_train[idx]
    if spec.crop_padding:
        top, left = torch.randint(
            0, 2 * spec.crop_padding + 1, (2, batch), device=x.device, generator=generator
        )
        x = crop_at(x, spec.crop_padding, top, left)
    if spec.flip:
        x = flip_where(x, torch.rand(batch, device=x.device, generator=generator) < 0.5)
    return normalize(x, spec.channels), data.y_train[idx]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batches=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    padding=st.integers(0, 3),
    flip=st.booleans(),
    channels=st.sampled_from([1, 3]),
)
def test_the_sampler_draws_in_the_order_of_version_0_1(seed, batches, padding, flip, channels):
    task = toy_task(seed, crop_padding=padding, flip=flip, channels=channels)
    generator = torch.Generator().manual_seed(seed)
    for b in batches:
        (x, y), (xw, yw) = task.sample_train(b), v01_sample_train(task, generator, b)
        assert torch.equal(x, xw) and torch.equal(y, yw)
    assert torch.equal(task.state_dict()["generator"], generator.get_state())
