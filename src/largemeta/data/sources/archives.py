"""A dataset's archive on its authors' host, pinned by size and digest, read as a folder of class subfolders.

For the paper's datasets that torchvision lacks and the hub has no pinned copy of (Stanford Dogs, CUB-200,
Tiny ImageNet): the authors' own archive (``images.tar``, ``CUB_200_2011.tgz``, ``tiny-imagenet-200.zip``),
whose exact size and sha256 (for Tiny ImageNet's zip: md5, the only checksum published for it) other projects
record, is downloaded through the verified, resumable path of :mod:`largemeta.data.sources.verified` into
``<cache>/downloads/url/<host>/<path>`` (kept: a second conversion, ``--force``, reads it again).
Its class folders (``layout`` inside the archive) are extracted into a temporary folder under ``downloads/``,
read exactly as ``--root`` reads a local copy (:func:`~largemeta.data.sources.byo.load_folder`: images at the
dataset's stored size, 20 % of each class held out, stratified, seed 0) and removed again; so a download and a
``--root`` copy of the same files give the same dataset.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

from largemeta.data.sources.byo import load_folder
from largemeta.data.sources.fetch import Source, offline
from largemeta.data.sources.verified import download_verified
from largemeta.data.store.arrays import ArrayDataset
from largemeta.errors import UserError


@dataclass(frozen=True)
class UrlArchive(Source):
    """A tar (plain or compressed) or zip archive at ``url`` with ``size`` bytes and ``digest`` (a sha256, or
    the ``algorithm`` named: ``md5`` where that is all anyone publishes); ``layout`` is the folder inside it
    that holds one subfolder per class."""

    from_registry = False
    """An authors' host, not a registry: it may be gone, and the archive may never have been downloaded (the
    entry came from ``--root``), so a damaged cache entry is refused with the way to repair it, not rebuilt
    from a gigabyte download nobody asked for."""

    url: str
    size: int
    digest: str
    layout: str
    algorithm: str = "sha256"

    def __post_init__(self) -> None:
        hexes = {"sha256": 64, "md5": 32}.get(self.algorithm)
        if hexes is None or len(self.digest) != hexes or set(self.digest) - set("0123456789abcdef"):
            raise ValueError(f"bad pin for {self.url}: {self.algorithm} {self.digest!r}")

    def key(self) -> str:
        return f"url:{self.url}"

    def describe(self) -> str:
        weaker = "" if self.algorithm == "sha256" else f" ({self.algorithm} pin)"
        return f"pinned archive {self.url}{weaker}"

    @property
    def download_bytes(self) -> int:
        return self.size

    def local(self, downloads: Path) -> Path:
        where = urllib.parse.urlsplit(self.url)
        return downloads / "url" / where.netloc / where.path.strip("/")

    def is_cached(self, downloads: Path) -> bool:
        return self.local(downloads).is_file()

    def fetch(self, downloads: Path) -> dict[str, bytes]:  # pragma: no cover - interface only
        raise NotImplementedError("the archive is large: use download() or load()")

    def download(self, downloads: Path) -> Path:
        """The verified archive in the cache; :class:`SourceUnavailable` when it cannot be had."""
        return download_verified(
            self.url,
            self.local(downloads),
            size=self.size,
            digest=self.digest,
            algorithm=self.algorithm,
            label=self.url,
            desc=Path(urllib.parse.urlsplit(self.url).path).name,
            offline="LARGEMETA_OFFLINE" if offline() else None,
        )

    def load(self, name: str, downloads: Path, side: int) -> ArrayDataset:
        archive = self.download(downloads)
        tmp = Path(tempfile.mkdtemp(prefix=f".extract-{name}-", dir=downloads))
        try:
            extract_folder(archive, self.layout, tmp, self.url)
            ds = load_folder(tmp / self.layout, side=side, rgb=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return ArrayDataset(
            name,
            ds.x_train,
            ds.y_train,
            ds.x_test,
            ds.y_test,
            ds.class_names,
            notes=f"via {self.key()}, stored at {side} px; {ds.notes}",
        )


def extract_folder(archive: Path, layout: str, dest: Path, what: str) -> int:
    """Extract the regular files under ``layout/`` of a tar archive into ``dest`` (tar's ``data`` filter:
    no links out, no absolute paths, no device files) or of a zip archive (a member whose path is absolute
    or climbs out with ``..`` is refused); the number of files. One ``UserError`` when the archive cannot be
    read or has no such folder."""
    prefix = layout.strip("/") + "/"
    if zipfile.is_zipfile(archive):
        count = _extract_zip(archive, prefix, dest, what)
    else:
        count = _extract_tar(archive, prefix, dest, what)
    if not count:
        raise UserError(f"{what} has no files under {prefix} (the folder of class subfolders expected)")
    return count


def _extract_zip(archive: Path, prefix: str, dest: Path, what: str) -> int:
    count = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = info.filename.removeprefix("./")
                parts = Path(name).parts
                if name.startswith("/") or ".." in parts:
                    raise UserError(f"{what} has a member outside its folder ({name[:120]}); refusing it")
                if not info.is_dir() and name.startswith(prefix):
                    target = dest.joinpath(*parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                    count += 1
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise UserError(f"{what} is not a readable zip archive ({str(err).splitlines()[0][:120]})") from None
    return count


def _extract_tar(archive: Path, prefix: str, dest: Path, what: str) -> int:
    count = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                member.name = member.name.removeprefix("./")
                if member.isfile() and member.name.startswith(prefix):
                    tar.extract(member, dest, filter="data")
                    count += 1
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(f"{what} is not a readable tar archive ({str(err).splitlines()[0][:120]})") from None
    return count
