"""Datasets from public Hugging Face Hub dataset repositories: parquet files at a pinned commit.

A :class:`HubParquet` source names a repository, a 40-hex commit (never a branch: a branch moves) and each
file it needs with its size and sha256 (the hub shows the sha256 of every LFS file on the file's page). Files
are fetched over plain HTTPS from the hub's resolve URLs::

    {endpoint}/datasets/{repo}/resolve/{revision}/{path}

where ``endpoint`` is ``$HF_ENDPOINT`` (a mirror) or ``https://huggingface.co``. A token for gated
repositories is read from ``$HF_TOKEN``, else the file ``$HF_TOKEN_PATH``, else ``$HF_HOME/token``
(``~/.cache/huggingface`` by default: where ``huggingface-cli login`` puts it). ``HF_HUB_OFFLINE=1`` (like
``LARGEMETA_OFFLINE=1``) makes a file that is not in the cache a failure of this source, with no request made.

Downloads go to ``<cache>/downloads/hf/<owner>--<name>/<revision>/<path>``: bytes are appended to
``<path>.part`` (a broken transfer is resumed with an HTTP ``Range`` request the next time), the finished file
is checked against its size and sha256 and only then renamed into place; a mismatch removes the partial file
and is refused in one line (never "try the next source": the hub served something other than what was pinned).
The parquet files are then decoded with ``pyarrow`` (the ``hub`` extra) and Pillow into an
:class:`~largemeta.data.store.arrays.ArrayDataset`, which :mod:`largemeta.data.sources.datasets` keeps in its
cache format.

A parquet file must hold an image column (the ``datasets`` library's ``struct<bytes: binary, path: string>``,
or plain binary) and an integer label column; anything else is refused in one line naming the columns found.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from largemeta import console
from largemeta.data.sources.byo import square_resize
from largemeta.data.sources.fetch import Source, SourceUnavailable, offline
from largemeta.data.sources.verified import download_verified
from largemeta.data.store.arrays import ArrayDataset, split_off_test
from largemeta.errors import UserError

DEFAULT_ENDPOINT = "https://huggingface.co"
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def endpoint() -> str:
    """The hub's address: ``$HF_ENDPOINT`` (a mirror, or a test server) or ``https://huggingface.co``."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value (the hub's own switch) or ``LARGEMETA_OFFLINE``."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("", "0", "false", "no", "off")
    return flag or offline()


def token() -> str | None:
    """The user's hub token: ``$HF_TOKEN``, else the file ``$HF_TOKEN_PATH``, else ``$HF_HOME/token``."""
    env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if env:
        return env.strip()
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    path = Path(os.environ.get("HF_TOKEN_PATH") or home / "token").expanduser()
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repository: its path at the revision, the split it holds, its size and sha256.

    ``size``: the exact byte count when it is known (an LFS pointer gives it), else None: the server's
    ``Content-Length`` then tells a short transfer from a whole one, and the sha256 decides.
    ``approx_bytes``: the size the hub's file page shows (rounded), for plans.
    ``repo`` and ``revision``: where a dataset's splits live in different repositories (one for train, one for
    test), the file's own repository and commit; None means the source's."""

    path: str
    split: str
    size: int | None
    sha256: str
    approx_bytes: int | None = None
    repo: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class HubParquet(Source):
    """Parquet files (image + label) of a public hub dataset repository at a pinned commit (or of several,
    each file naming its own repository and commit).

    ``image_column`` and ``label_column`` are part of the pin: which columns hold the image and the class is
    read off the repository's card when it is pinned (e.g. CIFAR-100's ``img`` and ``fine_label``, beside a
    ``coarse_label`` that is not used), never guessed from a file at run time."""

    from_registry = True
    """A commit of a hub repository is as fixed as a registry package, and its files are kept verified under
    ``downloads/``: a damaged cache entry is converted again from them without asking."""

    repo: str
    revision: str
    files: tuple[HubFile, ...]
    image_column: str = "image"
    label_column: str = "label"

    def __post_init__(self) -> None:  # a programming error in a pin, caught when the module is imported
        if not _HEX40.fullmatch(self.revision):
            raise ValueError(f"{self.repo}: revision {self.revision!r} is not a 40-hex commit")
        for f in self.files:
            if (f.repo is None) != (f.revision is None):
                raise ValueError(f"{self.repo}: {f.path!r} names a repository without its commit or back")
            if f.revision is not None and not _HEX40.fullmatch(f.revision):
                raise ValueError(f"{f.repo}: revision {f.revision!r} is not a 40-hex commit")
            bad_size = f.size is not None and f.size <= 0
            if not _HEX64.fullmatch(f.sha256) or bad_size or f.split not in ("train", "test"):
                raise ValueError(f"{self.repo}: bad pin for {f.path!r}")

    def where(self, f: HubFile) -> tuple[str, str]:
        """The repository and commit that hold ``f``."""
        return f.repo or self.repo, f.revision or self.revision

    def _places(self) -> list[tuple[str, str]]:
        """Each (repository, commit) the files come from, in the files' order."""
        places: list[tuple[str, str]] = []
        for f in self.files:
            if self.where(f) not in places:
                places.append(self.where(f))
        return places or [(self.repo, self.revision)]

    def key(self) -> str:
        return " + ".join(f"hf:{repo}@{rev}" for repo, rev in self._places())

    def describe(self) -> str:
        return "Hugging Face dataset " + " + ".join(f"{repo} at {rev}" for repo, rev in self._places())

    @property
    def download_bytes(self) -> int:
        return sum(f.size or f.approx_bytes or 0 for f in self.files)

    def url(self, f: HubFile) -> str:
        repo, rev = self.where(f)
        return f"{endpoint()}/datasets/{repo}/resolve/{rev}/{urllib.parse.quote(f.path)}"

    def local(self, downloads: Path, f: HubFile) -> Path:
        repo, rev = self.where(f)
        return downloads / "hf" / repo.replace("/", "--") / rev / f.path

    def is_cached(self, downloads: Path) -> bool:
        return all(self.local(downloads, f).is_file() for f in self.files)

    def fetch(self, downloads: Path) -> dict[str, bytes]:
        """Path in the repository -> verified bytes (the files may be large: :meth:`download` gives paths)."""
        return {f.path: p.read_bytes() for f, p in self.download(downloads).items()}

    def download(self, downloads: Path) -> dict[HubFile, Path]:
        """Every pinned file, verified, in the cache; :class:`SourceUnavailable` when one cannot be had."""
        return {f: self._file(downloads, f) for f in self.files}

    def _file(self, downloads: Path, f: HubFile) -> Path:
        repo, rev = self.where(f)
        tok = token()
        return download_verified(
            self.url(f),
            self.local(downloads, f),
            size=f.size,
            digest=f.sha256,
            label=f"{repo}@{rev}:{f.path}",
            desc=f.path,
            headers={"Authorization": f"Bearer {tok}"} if tok else None,
            offline="HF_HUB_OFFLINE/LARGEMETA_OFFLINE" if hub_offline() else None,
            why=lambda code: _why(code, tok),
        )

    def load(
        self, name: str, downloads: Path, side: int, channels: int, num_classes: int, notes: str = ""
    ) -> ArrayDataset:
        """The verified files decoded: images at ``side`` px (shorter side, centre crop), ``channels`` 1 or 3;
        without a test file 20 % of each class is held out (stratified, seed 0)."""
        paths = self.download(downloads)
        splits: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
        names: list[str] | None = None
        for f, path in paths.items():
            repo, rev = self.where(f)
            what = f"{repo}@{rev[:12]}:{f.path}"
            x, y, found = read_parquet(path, self.image_column, self.label_column, side, channels, what)
            names = names or found
            if len(y) and (y.min() < 0 or y.max() >= num_classes):
                raise UserError(
                    f"{what}: labels in [{y.min()}, {y.max()}], expected [0, {num_classes - 1}] "
                    f"({num_classes} classes)"
                )
            splits[f.split].append((x, y))
        class_names = names if names and len(names) == num_classes else [str(i) for i in range(num_classes)]
        x_train = np.concatenate([x for x, _ in splits["train"]])
        y_train = np.concatenate([y for _, y in splits["train"]])
        where = f"via {self.key()}, stored at {side} px"
        if not splits["test"]:
            return split_off_test(
                name, x_train, y_train, class_names, test_fraction=0.2, seed=0, what=f" ({where})"
            )
        return ArrayDataset(
            name,
            x_train,
            y_train,
            np.concatenate([x for x, _ in splits["test"]]),
            np.concatenate([y for _, y in splits["test"]]),
            tuple(class_names),
            notes=f"{where}{'; ' + notes if notes else ''}",
        )


def _why(code: int, tok: str | None) -> str:
    if code == 404:
        return " (no such file at that revision: the repository, revision or path is gone or wrong)"
    if code in (401, 403):
        return (
            " (a gated or private repository: accept its terms on the hub and set HF_TOKEN)"
            if not tok
            else " (the token in use was refused)"
        )
    return ""


def _columns(schema: Any, image: str, label: str) -> tuple[str, str] | None:
    """How to read the image column (``struct`` or ``binary``); None when the schema is not image + label."""
    import pyarrow as pa

    names = schema.names
    if image not in names or label not in names:
        return None
    itype, ltype = schema.field(image).type, schema.field(label).type
    if not pa.types.is_integer(ltype):
        return None
    if pa.types.is_struct(itype) and itype.get_field_index("bytes") >= 0:
        return "struct", "bytes"
    if pa.types.is_binary(itype) or pa.types.is_large_binary(itype):
        return "binary", ""
    return None


def _class_names(schema: Any, label: str) -> list[str] | None:
    """The label names the ``datasets`` library records in the file's metadata, when it does."""
    import json

    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][label]
        names = feature.get("names")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def read_parquet(
    path: Path, image: str, label: str, side: int, channels: int, what: str
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """uint8 images (N, side, side, channels), int64 labels and the recorded class names of a parquet file."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceUnavailable("pyarrow is not installed (pip install 'largemeta[hub]')") from None
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{what} is not a readable parquet file ({str(err).splitlines()[0][:120]})") from None
    schema = pf.schema_arrow
    how = _columns(schema, image, label)
    if how is None:
        found = ", ".join(f"{n}: {schema.field(n).type}" for n in schema.names)
        raise UserError(
            f"{what} has columns ({found}); expected an image column {image!r} (struct<bytes> or binary) and "
            f"an integer label column {label!r}"
        )
    n = pf.metadata.num_rows
    x = np.empty((n, side, side, channels), np.uint8)
    y = np.empty(n, np.int64)
    i = 0
    mode = "RGB" if channels == 3 else "L"
    try:
        for batch in _batches(pf, image, label):
            col = batch.column(0)
            blobs = col.field(how[1]) if how[0] == "struct" else col
            labels = batch.column(1).to_numpy(zero_copy_only=False)
            for blob, lab in zip(blobs.to_pylist(), labels, strict=True):
                x[i] = _decode(blob, side, mode, f"{what} row {i}")
                y[i] = lab
                i += 1
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{what} is damaged ({str(err).splitlines()[0][:120]})") from None
    if i != n:
        raise UserError(f"{what} promised {n} rows and held {i}")
    return x, y, _class_names(schema, label)


def _batches(pf: Any, image: str, label: str) -> Iterator[Any]:
    yield from console.bar(
        pf.iter_batches(batch_size=512, columns=[image, label]), desc="decode", unit="batch"
    )


def _decode(blob: bytes | None, side: int, mode: str, what: str) -> np.ndarray:
    if blob is None:
        raise UserError(f"{what} has no image bytes")
    import io

    try:
        with Image.open(io.BytesIO(blob)) as im:
            im = square_resize(im.convert(mode), side)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{what} is not a readable image ({type(err).__name__})") from None
    return arr if arr.ndim == 3 else arr[..., None]


def download_bytes(sources: Sequence[Source]) -> int | None:
    """Bytes the first hub source among ``sources`` downloads (None when none is a hub source)."""
    for s in sources:
        if isinstance(s, HubParquet):
            return s.download_bytes
    return None
