"""The authors' archives (Stanford Dogs' ``images.tar``, CUB's ``CUB_200_2011.tgz``, Tiny ImageNet's
``tiny-imagenet-200.zip``) pinned by size and sha256 (md5 for the zip), end to end on loopback: real tar and
zip archives written by ``tarfile`` and ``zipfile`` of a real image folder, served by the
loopback server of ``test_data_hub`` (its paths happen to look like the hub's; the source fetches a plain
URL), downloaded, verified, extracted, read as ``--root`` reads the same folder, cached."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
from test_data_hub import REV, hub  # noqa: F401  (hub: the loopback server fixture)

from cli_runs import cli
from largemeta.data.sources import datasets
from largemeta.data.sources.archives import UrlArchive
from largemeta.data.sources.vision import (
    CUB200_ARCHIVE,
    STANFORD_DOGS_ARCHIVE,
    TINY_IMAGENET_ARCHIVE,
    FolderSource,
    _spec,
    _Vision,
)

NAME = "dogtoy"
PATH = f"/datasets/authors/dogs/resolve/{REV}/images.tar"


def tar_of(folder, arcname: str, mode: str = "w", extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        tar.add(folder, arcname=arcname)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_of(folder, arcname: str, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, f"{arcname}/{path.relative_to(folder)}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def dogs(hub, monkeypatch, image_folder):  # noqa: F811 (hub: the fixture)
    """``dogtoy``: the authors' archive (pinned, served on loopback) first, then ``--root``."""

    def register(
        data: bytes, digest: str | None = None, layout: str = "Images", algorithm: str = "sha256"
    ) -> UrlArchive:
        hub.files[("authors/dogs", REV, "images.tar")] = data
        digest = digest or hashlib.new(algorithm, data).hexdigest()
        archive = UrlArchive(hub.url + PATH, len(data), digest, layout, algorithm)
        spec = _spec(_Vision(NAME, "toy dogs", 3, 16, 15, (archive, FolderSource("Images", 16))))
        monkeypatch.setitem(datasets.DATASETS._entries, NAME, spec)
        return archive

    return register


def test_download_extract_and_read_as_root_does(capsys, tmp_path, hub, dogs, image_folder):  # noqa: F811
    archive = dogs(tar_of(image_folder, "Images", extra={"README.txt": b"not an image, outside Images/"}))
    code, out, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path / "a"))
    assert code == 0, err
    assert f"{NAME}: 12 train + 3 test, 3 classes, 16x16x3" in out
    assert [p for p, _ in hub.log] == [PATH]
    got = datasets.fetch_dataset(NAME, tmp_path / "a")
    # the same folder given as --root (no request) gives the same dataset, pixel for pixel
    copy = tmp_path / "copy"
    (copy / "Images").parent.mkdir(parents=True)
    (copy / "Images").symlink_to(image_folder, target_is_directory=True)
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path / "b"), "--root", str(copy))
    assert code == 0, err
    assert len(hub.log) == 1
    ref = datasets.fetch_dataset(NAME, tmp_path / "b")
    assert got.class_names == ref.class_names == ("circle", "square", "triangle")
    assert np.array_equal(got.x_train, ref.x_train) and np.array_equal(got.y_test, ref.y_test)
    # the archive is kept (verified), the extracted folder is not
    kept = archive.local(tmp_path / "a" / "downloads")
    assert kept.is_file() and kept.stat().st_size == archive.size
    assert not list((tmp_path / "a" / "downloads").glob(".extract-*"))
    code, out, _ = cli(capsys, "data", "list", "--json", "--data-dir", str(tmp_path / "a"))
    row = {r["name"]: r for r in json.loads(out)["datasets"]}[NAME]
    assert row["sources"] == [f"url:{hub.url}{PATH}", "root"]
    assert row["download_mb"] == pytest.approx(archive.size / 1e6)


def test_a_compressed_archive(capsys, tmp_path, hub, dogs, image_folder):  # noqa: F811
    dogs(tar_of(image_folder, "CUB_200_2011/images", mode="w:gz"), layout="CUB_200_2011/images")
    code, out, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 0, err
    assert f"{NAME}: 12 train + 3 test" in out


def test_a_zip_pinned_by_md5_reads_as_root_does(capsys, tmp_path, hub, dogs, image_folder):  # noqa: F811
    # Tiny ImageNet's case: a zip whose only published checksum is an md5, its class folders one level down
    # (tiny-imagenet-200/train/<wnid>/images/*.JPEG beside a <wnid>_boxes.txt that is not an image)
    nested = tmp_path / "nested"
    for cls in sorted(p for p in image_folder.iterdir() if p.is_dir()):
        (nested / cls.name / "images").mkdir(parents=True)
        for img in cls.iterdir():
            (nested / cls.name / "images" / img.name).write_bytes(img.read_bytes())
        (nested / cls.name / f"{cls.name}_boxes.txt").write_text("0 0 8 8\n")
    data = zip_of(nested, "tiny-imagenet-200/train", extra={"tiny-imagenet-200/wnids.txt": b"circle\n"})
    dogs(data, layout="tiny-imagenet-200/train", algorithm="md5")
    code, out, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path / "a"))
    assert code == 0, err
    assert f"{NAME}: 12 train + 3 test, 3 classes, 16x16x3" in out
    got = datasets.fetch_dataset(NAME, tmp_path / "a")
    argv = ["data", "fetch", NAME, "--data-dir", str(tmp_path / "b"), "--root", str(nested)]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    ref = datasets.fetch_dataset(NAME, tmp_path / "b")
    assert got.class_names == ref.class_names == ("circle", "square", "triangle")
    assert np.array_equal(got.x_train, ref.x_train) and np.array_equal(got.y_test, ref.y_test)
    assert not list((tmp_path / "a" / "downloads").glob(".extract-*"))


def test_a_wrong_md5_is_refused(capsys, tmp_path, hub, dogs, image_folder):  # noqa: F811
    dogs(zip_of(image_folder, "Images"), digest="0" * 32, algorithm="md5")
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "md5 mismatch" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "datasets-v2" / NAME).exists()
    assert not [p for p in (tmp_path / "downloads").rglob("*") if p.is_file()]


def test_a_zip_member_escaping_the_folder_is_refused(capsys, tmp_path, hub, dogs, image_folder):  # noqa: F811
    dogs(zip_of(image_folder, "Images", extra={"Images/../../escaped.txt": b"x"}))
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "has a member outside its folder" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (tmp_path / "datasets-v2" / NAME).exists()


def test_wrong_sha256_is_refused(capsys, tmp_path, hub, dogs, image_folder):  # noqa: F811
    dogs(tar_of(image_folder, "Images"), digest="0" * 64)
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert (
        code == 2 and "sha256 mismatch" in err and "images.tar" in err and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "datasets-v2" / NAME).exists()
    assert not [p for p in (tmp_path / "downloads").rglob("*") if p.is_file()]


def test_an_archive_without_the_folder(capsys, tmp_path, hub, dogs, image_folder):  # noqa: F811
    dogs(tar_of(image_folder, "Photos"))
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "has no files under Images/" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "datasets-v2" / NAME).exists()


def test_a_member_escaping_the_folder_is_refused(capsys, tmp_path, hub, dogs, image_folder):  # noqa: F811
    dogs(tar_of(image_folder, "Images", extra={"Images/../../escaped.txt": b"x"}))
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and "is not a readable tar archive" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("escaped.txt"))


def test_offline_makes_no_request(capsys, tmp_path, hub, dogs, image_folder, monkeypatch):  # noqa: F811
    dogs(tar_of(image_folder, "Images"))
    monkeypatch.setenv("LARGEMETA_OFFLINE", "1")
    code, _, err = cli(capsys, "data", "fetch", NAME, "--data-dir", str(tmp_path))
    assert code == 2 and hub.log == [] and "no --root given" in err and len(err.strip().splitlines()) == 1


def test_an_archive_pin_must_be_a_whole_digest():
    with pytest.raises(ValueError, match="bad pin"):
        UrlArchive("http://host/a.tar", 10, "0" * 32, "Images")  # an md5's length named as a sha256
    with pytest.raises(ValueError, match="bad pin"):
        UrlArchive("http://host/a.zip", 10, "0" * 32, "Images", algorithm="crc32")


def test_the_registered_archives(capsys, tmp_path):
    code, out, _ = cli(capsys, "data", "list", "--json", "--data-dir", str(tmp_path))
    rows = {r["name"]: r for r in json.loads(out)["datasets"]}
    assert rows["stanford_dogs"]["sources"] == [f"url:{STANFORD_DOGS_ARCHIVE.url}", "root"]
    assert rows["cub200"]["sources"] == [f"url:{CUB200_ARCHIVE.url}", "root"]
    assert rows["tiny_imagenet"]["sources"] == [f"url:{TINY_IMAGENET_ARCHIVE.url}", "root"]
    assert TINY_IMAGENET_ARCHIVE.url == "https://cs231n.stanford.edu/tiny-imagenet-200.zip"
    assert TINY_IMAGENET_ARCHIVE.algorithm == "md5" and len(TINY_IMAGENET_ARCHIVE.digest) == 32
    assert rows["tiny_imagenet"]["download_mb"] == pytest.approx(248.100043)
    assert rows["stanford_dogs"]["download_mb"] == pytest.approx(793.57952)
    assert rows["cub200"]["download_mb"] == pytest.approx(1150.585339)
