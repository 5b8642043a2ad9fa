"""Streamed task images: real DataLoader worker processes, the same batches as device placement on a CPU,
exact resume, and one-line errors for files that go bad and workers that die."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

from largemeta.data.sources.datasets import BYO_ENTRIES, load_dataset, memory_mapped
from largemeta.data.tasks.loader import TaskLoader, choose_placement, resident_bytes
from largemeta.data.tasks.stream import StreamError, StreamHub, StreamRows
from largemeta.data.tasks.suite import TaskSpec
from largemeta.errors import UserError


@pytest.fixture
def npz_task(tmp_path):
    """A 5-class .npz dataset of 12 x 12 grey images and a task over 4 of its classes, resized to 10 px."""
    rng = np.random.default_rng(0)
    path = tmp_path / "toy.npz"
    np.savez(path, x=rng.integers(0, 256, (300, 12, 12), dtype=np.uint8), y=np.arange(300) % 5)
    spec = TaskSpec("toy", str(path), classes="0-3", image_size=10, channels=1, crop_padding=2, flip=True)
    return spec, tmp_path / "cache"


@pytest.fixture
def loaders(npz_task):
    _, cache = npz_task
    device = TaskLoader("cpu", "device", data_dir=cache)
    stream = TaskLoader("cpu", "stream", data_dir=cache, workers=2)
    yield device, stream
    stream.close()


def same_tensors(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_streamed_batches_equal_device_batches_on_a_cpu(npz_task, loaders):
    spec, _ = npz_task
    device, stream = (loader.task_images(spec, seed=7) for loader in loaders)
    assert isinstance(stream.rows, StreamRows) and (stream.num_train, stream.num_eval) == (
        device.num_train,
        device.num_eval,
    )
    for _ in range(6):
        assert same_tensors(device.sample_train(16), stream.sample_train(16))
    assert torch.equal(device.state_dict()["generator"], stream.state_dict()["generator"])
    for a, b in zip(device.iter_eval(50), stream.iter_eval(50), strict=True):
        assert same_tensors(a, b)
    (dt, dq), (st, sq) = device.split_query(0.25), stream.split_query(0.25)
    for _ in range(3):
        assert same_tensors(dt.sample_train(8), st.sample_train(8)) and same_tensors(
            dq.sample_train(8), sq.sample_train(8)
        )
    sub_d, sub_s = device.subsample(n_per_class=10, seed=3), stream.subsample(n_per_class=10, seed=3)
    assert same_tensors(sub_d.sample_train(8), sub_s.sample_train(8)) and sub_s.num_train == 40


def test_a_stream_resumes_exactly_whatever_was_drawn_ahead(npz_task, loaders):
    spec, _ = npz_task
    _, loader = loaders
    images = loader.task_images(spec, seed=1)
    images.sample_train(8)
    state = images.state_dict()  # batches are drawn ahead by now: the state is from before them
    later = [images.sample_train(8) for _ in range(4)]
    images.load_state_dict(state)
    assert all(same_tensors(b, images.sample_train(8)) for b in later)
    fresh = loader.task_images(spec, seed=99)  # another task object, as a resumed run builds
    fresh.load_state_dict(state)
    assert all(same_tensors(b, fresh.sample_train(8)) for b in later)


def test_a_new_batch_size_rewinds_what_was_drawn_ahead(npz_task, loaders):
    spec, _ = npz_task
    device, stream = (loader.task_images(spec, seed=2) for loader in loaders)
    assert same_tensors(device.sample_train(8), stream.sample_train(8))
    assert same_tensors(device.sample_train(5), stream.sample_train(5))  # stream had drawn batches of 8 ahead


def test_without_workers_it_decodes_in_process(npz_task):
    spec, cache = npz_task
    device = TaskLoader("cpu", "device", data_dir=cache).task_images(spec, seed=3)
    inline = TaskLoader("cpu", "stream", data_dir=cache)
    inline.workers = 0
    stream = inline.task_images(spec, seed=3)
    assert same_tensors(device.sample_train(8), stream.sample_train(8))


def square_folder(root, make_image, classes=3, per_class=12, size=10, mode="L"):
    for c in range(classes):
        for i in range(per_class):
            make_image(
                root / f"class{c}" / f"{i:03d}.png",
                size=(size, size),
                mode=mode,
                value=(37 * c + 11 * i) % 256,
            )
    return root


def test_a_folder_streams_the_batches_of_device_placement_when_no_resize_differs(tmp_path, make_image):
    root = square_folder(tmp_path / "folder", make_image)
    spec = TaskSpec("f", str(root), image_size=10, channels=1, crop_padding=2, flip=True)
    device = TaskLoader("cpu", "device", data_dir=tmp_path / "cache").task_images(spec, seed=4)
    loader = TaskLoader("cpu", "stream", data_dir=tmp_path / "cache", workers=2)
    try:
        stream = loader.task_images(spec, seed=4)
        for _ in range(4):
            assert same_tensors(device.sample_train(8), stream.sample_train(8))
        assert all(same_tensors(a, b) for a, b in zip(device.iter_eval(4), stream.iter_eval(4), strict=True))
    finally:
        loader.close()


def test_colour_files_stream_at_the_tasks_size_and_channels(tmp_path, make_image):
    root = square_folder(tmp_path / "rgb", make_image, size=23, mode="RGB")
    loader = TaskLoader("cpu", "stream", data_dir=tmp_path / "cache", workers=1)
    try:
        for channels in (1, 3):
            spec = TaskSpec("c", str(root), image_size=16, channels=channels, crop_padding=0, flip=False)
            x, y = loader.task_images(spec, seed=0).sample_train(4)
            assert x.shape == (4, channels, 16, 16) and x.dtype == torch.float32 and y.shape == (4,)
    finally:
        loader.close()


def test_a_file_that_goes_bad_mid_run_is_named(tmp_path, make_image):
    root = square_folder(tmp_path / "folder", make_image, classes=2, per_class=4)
    spec = TaskSpec("f", str(root), image_size=10, channels=1, crop_padding=0, flip=False)
    loader = TaskLoader("cpu", "stream", data_dir=tmp_path / "cache", workers=1)
    try:
        images = loader.task_images(spec, seed=0)
        images.sample_train(2)
        victim = root / "class1" / "002.png"
        victim.write_bytes(victim.read_bytes()[:30])  # truncated
        (root / "class0" / "001.png").unlink()  # missing
        with pytest.raises(StreamError) as err:
            for _ in range(50):
                images.sample_train(4)
        msg = str(err.value)
        assert "\n" not in msg and ("002.png" in msg or "001.png" in msg) and "task 'f'" in msg
    finally:
        loader.close()


def test_a_cache_array_truncated_mid_run_is_named(npz_task):
    spec, cache = npz_task
    loader = TaskLoader("cpu", "stream", data_dir=cache, workers=1)
    try:
        images = loader.task_images(spec, seed=0)
        images.sample_train(4)
        path = images.rows.source_train.path
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        with pytest.raises(StreamError, match=r"x_train\.npy.*truncated"):
            for _ in range(20):
                images.sample_train(4)
    finally:
        loader.close()


def test_a_worker_that_dies_stops_the_stream_in_one_line(npz_task):
    spec, cache = npz_task
    loader = TaskLoader("cpu", "stream", data_dir=cache, workers=2)
    try:
        images = loader.task_images(spec, seed=0)
        images.sample_train(4)
        workers = loader.hub._iter._workers  # the real worker processes
        os.kill(workers[0].pid, signal.SIGKILL)
        start = time.time()
        with pytest.raises(StreamError, match="worker process died") as err:
            for _ in range(100):
                images.sample_train(4)
        assert "\n" not in str(err.value) and time.time() - start < 30
    finally:
        loader.close()


def test_tasks_come_and_go_without_restarting_the_workers(npz_task, loaders):
    spec, _ = npz_task
    device, stream = loaders
    a = stream.task_images(spec, seed=5)
    a.sample_train(4)
    pids = [w.pid for w in stream.hub._iter._workers]
    a.close()
    b = stream.task_images(spec, seed=6)
    assert same_tensors(device.task_images(spec, seed=6).sample_train(4), b.sample_train(4))
    assert [w.pid for w in stream.hub._iter._workers] == pids
    assert len(stream.hub._streams) == 1  # a's stream is gone


def test_auto_picks_by_the_budget_and_says_why(npz_task):
    spec, cache = npz_task
    loader = TaskLoader("cpu", data_dir=cache)
    size = resident_bytes(loader, [spec, spec])
    assert size == 2 * (240 + 60) * 4 // 5 * 100  # 4 of 5 classes, both splits, 1 x 10 x 10 each
    cpu = torch.device("cpu")
    assert choose_placement("auto", size, cpu, budget_gb=1.0)[0] == "device"
    placement, why = choose_placement("auto", size, cpu, budget_gb=size / 2 / 2**30)
    assert placement == "stream" and "over the budget" in why and "memory_budget_gb" in why
    assert choose_placement("stream", 1, cpu)[0] == "stream"
    assert "half the available host memory" in choose_placement("auto", 1, cpu)[1]


def test_the_loader_resolves_its_data_placement_once(npz_task):
    spec, cache = npz_task
    size = resident_bytes(TaskLoader("cpu", data_dir=cache), [spec])

    def loader(placement, **kw):
        return TaskLoader("cpu", placement, specs=[spec, spec], data_dir=cache, **kw)

    assert loader("auto", memory_budget_gb=1.0).data_placement == "device"
    over = loader("auto", at_once=1, memory_budget_gb=size / 2 / 2**30)
    assert over.data_placement == "stream" and "over the budget" in over.why
    assert loader("auto", memory_budget_gb=1e-9, resumed="device").data_placement == "device"  # kept
    assert loader("stream").data_placement == "stream" and loader("stream").why == ""
    assert loader("stream", resumed="device").data_placement == "stream"  # a CPU samples both alike
    with pytest.raises(UserError, match=r"unknown data_placement 'disk' \(valid: auto, device, stream\)"):
        loader("disk")
    # elsewhere the device sampler's generator is not the CPU's: a resume keeps its placement
    with pytest.raises(UserError, match="trained with data_placement = 'device'.*on meta; resume with"):
        TaskLoader("meta", "stream", resumed="device")


def test_a_bring_your_own_npz_is_written_once_as_a_cache_entry_to_stream_from(npz_task):
    spec, cache = npz_task
    first = memory_mapped(spec.dataset, cache)
    assert isinstance(first.x_train, np.memmap) and len(list((cache / BYO_ENTRIES).iterdir())) == 1
    again = memory_mapped(spec.dataset, cache)
    assert again.x_train.filename == first.x_train.filename
    loaded = load_dataset(spec.dataset)  # what the .npz reads as, in memory
    assert not isinstance(loaded.x_train, np.memmap)
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(np.asarray(getattr(again, k)), getattr(loaded, k))


def test_the_hub_issues_requests_for_the_task_waited_on_first():
    hub = StreamHub(0)
    draws = []

    def drawer(name):
        def draw():
            draws.append(name)
            return ("rows", "", 0, (0, 1, 1, 1), np.zeros(0, np.int64)), None, None

        return draw

    a = hub.open(drawer("a"), what="a", size=1, channels=1)
    hub.open(drawer("b"), what="b", size=1, channels=1)
    hub._wanted = a.id
    hub._next_request()
    hub._wanted = None
    hub._next_request()
    hub._next_request()
    assert draws == ["a", "b", "a"]  # then the fewest drawn ahead, least recently served first
