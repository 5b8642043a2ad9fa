"""Sharded checkpoints over ``torch.distributed.checkpoint`` (DCP): every rank writes what it owns.

A checkpoint is a set of named *entries* (any nest of dicts, lists, tuples, tensors, numbers and strings);
each entry is written by exactly one rank, the one that owns it, and read back by whichever ranks need it —
on any number of ranks, or in one process without a process group. On disk, in a folder ``ROOT``::

    ROOT/checkpoint.json               the manifest: the checkpoint, and the pointer to its folder
    ROOT/checkpoint-00000040/          one DCP checkpoint: .metadata + one __R_0.distcp file per writing rank,
                                       and manifest.json, a copy of the manifest that published it
    ROOT/.checkpoint-00000044.tmp/     a checkpoint being written (swept away at the next start)

**Format.** An entry becomes one DCP tensor per tensor it holds (``ENTRY/0``, ``ENTRY/1``, …; tensors of
at most 64 KiB are packed, one ``ENTRY/pack-DTYPE`` tensor per dtype) and a *skeleton* — its structure, every
non-tensor value and where each packed tensor lies, as JSON, stored as a uint8 tensor ``ENTRY/skeleton``.
So the DCP checkpoint holds tensors only (no pickled "bytes" items). The manifest (JSON) holds the format,
the step, the caller's run record (``info``), the entries and who wrote them, and the sha256 and size of
every file of the folder, plus a sha256 of itself.

**Atomic.** Ranks write into the temporary folder (DCP fsyncs every file); after DCP's own completion round,
each rank hashes the files it wrote and sends the digests to rank 0, which hashes ``.metadata``, fsyncs the
folder, renames it to its final name, and only then replaces the manifest (``checkpoint.atomic_write``:
temporary file, fsync, rename, fsync of the folder). The manifest is the commit point: a kill -9 at any
moment leaves the previous manifest naming the previous, complete folder, which is deleted only after the
new manifest is in place. Left-overs (a temporary folder, a folder superseded by a newer manifest) are
removed by :func:`sweep`, which touches only folders holding nothing but this module's files, and never a
folder at or after the manifest's step: a folder renamed by a save killed before its manifest, or one newer
than a manifest put back by hand, is a complete checkpoint (its copy of the manifest says so:
:func:`complete_folders`) that a caller may recover, not debris.

**Integrity.** Before anything of a folder is read, the manifest's own sha256 is checked, then the sha256 of
``.metadata`` and of every data file the read will touch (a rank reads only the files that hold its
entries), so a flipped byte anywhere is refused in one line.

**No code execution.** DCP reads ``.metadata`` with a plain ``pickle.load``; here it is read by an
allow-list unpickler that can build only DCP's own metadata classes, ``torch.Size``, dtypes and layouts
(anything else — ``os.system``, ``builtins.eval`` — is refused before it is called), and only after its
sha256 matched the manifest. Tensor data is read by DCP with ``torch.load(weights_only=True)``; metadata
naming a non-tensor ("bytes") item, a stream transform or a file outside the folder is refused. The manifest
and skeletons are JSON.

Every failure is a one-line :class:`~largemeta.errors.UserError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import _StorageInfo

from largemeta.checkpoint import atomic_write
from largemeta.errors import UserError
from largemeta.files import sha256_file

FORMAT = "largemeta-sharded-checkpoint-v2"
METADATA = ".metadata"
FOLDER_MANIFEST = "manifest.json"
"""A copy of the manifest inside its checkpoint folder, written before the folder is renamed into place: a
folder whose run manifest was lost, damaged or replaced can still be verified and recovered."""
SKELETON = "skeleton"
PACK_BYTES = 64 << 10
"""Tensors up to this size are packed, per dtype, into one DCP tensor per entry (DCP's cost per item is a
few hundred microseconds; a model has hundreds of small tensors — biases, BatchNorm, step counters)."""
_NO_DIST_WARNING = r"torch\.distributed is disabled, unavailable or uninitialized"
_ENTRY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


# ----------------------------------------------------------------------------------------------- names
def manifest_path(root: Path, name: str = "checkpoint") -> Path:
    return Path(root) / f"{name}.json"


def _folder_name(name: str, step: int) -> str:
    return f"{name}-{step:08d}"


def _folder_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.?{re.escape(name)}-\d{{8,}}(\.tmp)?$")


def exists(root: Path, name: str = "checkpoint") -> bool:
    """Whether ``root`` holds a sharded checkpoint (its manifest)."""
    return manifest_path(root, name).is_file()


# ------------------------------------------------------------------------------------- entry encoding
def encode(value: Any, tensors: list[torch.Tensor]) -> Any:
    """The JSON skeleton of ``value``; its tensors are appended to ``tensors`` (referenced by index)."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 0:  # nothing to store: shape and dtype are enough
            return {"e": [list(value.shape), str(value.dtype).removeprefix("torch.")]}
        tensors.append(value)
        return {"t": len(tensors) - 1}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"v": value}
    if isinstance(value, Mapping):
        for k in value:
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint dict keys must be str or int, got {k!r}")
        return {"d": [[k, encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"l" if isinstance(value, list) else "u": [encode(v, tensors) for v in value]}
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def decode(skeleton: Any, tensors: Mapping[int, torch.Tensor]) -> Any:
    """Inverse of :func:`encode` (``tensors[i]`` is the i-th tensor)."""
    if not isinstance(skeleton, dict) or len(skeleton) != 1:
        raise ValueError(f"bad skeleton node {str(skeleton)[:60]}")
    ((kind, body),) = skeleton.items()
    if kind == "t":
        return tensors[int(body)]
    if kind == "v":
        if body is not None and not isinstance(body, (bool, int, float, str)):
            raise ValueError("bad skeleton value")
        return body
    if kind == "e":
        shape, dtype = body
        if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise ValueError(f"bad dtype {dtype!r}")
        return torch.empty([int(s) for s in shape], dtype=getattr(torch, dtype))
    if kind == "d":
        return {k: decode(v, tensors) for k, v in body}
    if kind in ("l", "u"):
        items = [decode(v, tensors) for v in body]
        return items if kind == "l" else tuple(items)
    raise ValueError(f"bad skeleton kind {kind!r}")


def _owned(t: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous CPU tensor with its own storage (torch.save writes a view's whole storage)."""
    t = t.detach().to("cpu").contiguous()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or t.storage_offset():
        t = t.clone()
    return t


def _flat_entries(entries: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    for entry, value in entries.items():
        if not _ENTRY.match(entry):
            raise ValueError(
                f"bad checkpoint entry name {entry!r} (words of letters, digits, _ . - joined by /)"
            )
        tensors: list[torch.Tensor] = []
        tree = encode(value, tensors)
        small: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(tensors):
            if t.numel() * t.element_size() <= PACK_BYTES:
                small.setdefault(t.dtype, []).append(i)
            else:
                flat[f"{entry}/{i}"] = _owned(t)
        packed: dict[str, list[Any]] = {}
        for dtype, members in small.items():
            name, offset = str(dtype).removeprefix("torch."), 0
            for i in members:
                packed[str(i)] = [name, offset, list(tensors[i].shape)]
                offset += tensors[i].numel()
            flat[f"{entry}/pack-{name}"] = torch.cat([tensors[i].detach().cpu().reshape(-1) for i in members])
        text = json.dumps({"tree": tree, "packed": packed}, separators=(",", ":")).encode()
        flat[f"{entry}/{SKELETON}"] = torch.frombuffer(bytearray(text), dtype=torch.uint8)
    return flat


def _unpack(doc: Any, flat: Mapping[str, torch.Tensor], key: str, own: re.Pattern[str]) -> Any:
    """An entry from its skeleton document, its own tensors and its packs."""
    tensors: dict[int, torch.Tensor] = {}
    for fqn, t in flat.items():
        m = own.match(fqn)
        if m and m.group(1).isdigit():
            tensors[int(m.group(1))] = t
    for i, (dtype, offset, shape) in doc["packed"].items():
        pack = flat[f"{key}/pack-{dtype}"]
        n = torch.Size(shape).numel()
        if not 0 <= int(offset) <= int(offset) + n <= pack.numel():
            raise ValueError(f"packed tensor {i} lies outside its pack")
        tensors[int(i)] = pack[int(offset) : int(offset) + n].view(shape).clone()
    return decode(doc["tree"], tensors)


# -------------------------------------------------------------------------------------- safe metadata
_ALLOWED = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorStorageMetadata",
        "TensorProperties",
        "ChunkStorageMetadata",
        "BytesStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` but builds nothing outside an allow-list of DCP's own classes."""

    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "torch":
            value = getattr(torch, name, None)
            if name == "Size" or isinstance(value, (torch.dtype, torch.layout)):
                return value
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def parse_metadata(data: bytes, where: str = METADATA) -> dcp_metadata.Metadata:
    """DCP metadata from ``data`` without executing code, checked to describe tensors in plain files."""
    try:
        metadata = _MetadataUnpickler(io.BytesIO(data)).load()
    except Exception as err:  # any malformed pickle: a one-line refusal, never a traceback
        raise UserError(f"checkpoint {where!r} is not a largemeta checkpoint's metadata ({err})") from None
    if not isinstance(metadata, dcp_metadata.Metadata) or not isinstance(metadata.storage_data, dict):
        raise UserError(f"checkpoint {where!r} is not a largemeta checkpoint's metadata")
    for fqn, md in metadata.state_dict_metadata.items():
        if not isinstance(md, dcp_metadata.TensorStorageMetadata):
            raise UserError(
                f"checkpoint {where!r} holds a non-tensor item {fqn!r} (not written by largemeta)"
            )
    for index, info in metadata.storage_data.items():
        path = getattr(info, "relative_path", None)
        if (
            not isinstance(index, dcp_metadata.MetadataIndex)
            or not isinstance(info, _StorageInfo)
            or not isinstance(path, str)
            or Path(path).name != path
            or path.startswith(".")
            or getattr(info, "transform_descriptors", None)
        ):
            raise UserError(f"checkpoint {where!r} names a storage item outside plain files of its folder")
    metadata.storage_meta = dcp_metadata.StorageMeta()
    return metadata


class _Reader(FileSystemReader):
    """DCP's file reader, handed metadata already verified and parsed safely (never ``pickle.load``)."""

    def __init__(self, path: Path, metadata: dcp_metadata.Metadata) -> None:
        super().__init__(path)
        self._metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        return self._metadata


class _Writer(FileSystemWriter):
    """DCP's file writer that remembers which files it wrote, and records no paths in the metadata."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, single_file_per_rank=True, sync_files=True, overwrite=True)
        self.written: set[str] = set()

    def storage_meta(self) -> dcp_metadata.StorageMeta | None:
        return None  # would hold the temporary folder's path, wrong once renamed

    def write_data(self, plan, planner):  # type: ignore[no-untyped-def]
        if not plan.items:  # a rank that owns nothing writes no (empty) file
            done: torch.futures.Future = torch.futures.Future()
            done.set_result([])
            return done
        future = super().write_data(plan, planner)
        self.written |= {r.storage_data.relative_path for r in future.value()}
        return future


# ----------------------------------------------------------------------------------------- hashing
def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -------------------------------------------------------------------------------------------- save
def _rank(group: Any) -> int:
    return dist.get_rank(group) if group is not None else 0


def _failure_text(err: CheckpointException) -> tuple[BaseException | None, str]:
    failures = getattr(err, "_failures", {}) or {}
    for rank, failure in sorted(failures.items()):
        exc = failure[0] if isinstance(failure, tuple) else failure
        return (
            exc,
            f"rank {rank}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
        )
    return None, str(err)


def save(
    root: Path,
    step: int,
    entries: Mapping[str, Any],
    *,
    info: Mapping[str, Any] | None = None,
    group: Any = None,
    name: str = "checkpoint",
) -> None:
    """Write checkpoint ``step`` of ``root``: a collective over ``group`` (every rank calls it with the
    entries it owns; entry names must be unique over all ranks); without a group, one process writes all.

    ``info`` (JSON values; rank 0's is kept) is stored in the manifest. Returns once the new checkpoint is
    published on every rank. A failure to write is a :class:`UserError` that leaves the previous checkpoint
    as it was; a lost peer surfaces as the ``RuntimeError`` of the failed collective.
    """
    root = Path(root)
    rank = _rank(group)
    tmp = root / f".{_folder_name(name, step)}.tmp"
    final = root / _folder_name(name, step)
    flat = _flat_entries(entries)
    writer = _Writer(tmp)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_DIST_WARNING)
            dcp.save(flat, storage_writer=writer, process_group=group, no_dist=group is None)
    except CheckpointException as err:
        exc, text = _failure_text(err)
        if _lost_peer(exc):
            raise exc from None  # a failed collective inside DCP: the caller reports the lost peer
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not stay full of an unused checkpoint
        hint = "" if isinstance(exc, OSError) else " — a write failed: is the disk full?"
        raise UserError(
            f"cannot write checkpoint {str(tmp)!r} ({text}{hint}); the previous checkpoint is intact"
        ) from None
    try:
        mine = {
            rel: {"sha256": sha256_file(tmp / rel), "bytes": (tmp / rel).stat().st_size}
            for rel in writer.written
        }
    except OSError as err:
        mine = {"!error": {"sha256": f"cannot read a written file: {err.strerror or err}", "bytes": 0}}
    piece = (mine, {e: rank for e in entries})
    pieces = [piece]
    if group is not None:
        gathered: list[Any] | None = [None] * dist.get_world_size(group) if rank == 0 else None
        dist.gather_object(piece, gathered, dst=dist.get_global_rank(group, 0), group=group)
        pieces = gathered or []
    outcome: list[Any] = [None]
    if rank == 0:
        try:
            _publish(root, name, step, tmp, final, pieces, info or {})
        except UserError as err:
            outcome[0] = str(err)
    if group is not None:
        dist.broadcast_object_list(outcome, src=dist.get_global_rank(group, 0), group=group)
    if outcome[0] is not None:
        raise UserError(outcome[0])


_PEER_WORDS = ("gloo", "nccl", "timed out", "timeout", "connection", "peer", "socket", "broken pipe")


def _lost_peer(exc: BaseException | None) -> bool:
    """Whether DCP failed in a collective (another rank gone), not in writing: a full disk or a file-size
    limit surfaces from torch's file writer as a plain RuntimeError ("unexpected pos ..."), which is a write
    failure like any OSError."""
    if isinstance(exc, dist.DistError):
        return True
    if not isinstance(exc, RuntimeError) or isinstance(exc, OSError):
        return False
    return any(word in str(exc).lower() for word in _PEER_WORDS)


def _publish(
    root: Path, name: str, step: int, tmp: Path, final: Path, pieces: list[Any], info: Mapping[str, Any]
) -> None:
    """Rank 0: complete the manifest, move the folder into place, swap the manifest, drop the old folder."""
    files: dict[str, Any] = {}
    owners: dict[str, int] = {}
    for mine, entries in pieces:
        if "!error" in mine:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(
                f"checkpoint {str(tmp)!r}: {mine['!error']['sha256']}; the previous one is intact"
            )
        files.update(mine)
        owners.update(entries)
    try:
        files[METADATA] = {"sha256": sha256_file(tmp / METADATA), "bytes": (tmp / METADATA).stat().st_size}
        text = _manifest_text(step, final.name, info, owners, files)
        _write_folder_manifest(tmp, text)
        _fsync_dir(tmp)
        if final.exists() and not is_own_folder(final):
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(
                f"cannot write checkpoint {str(final)!r}: a folder of that name holding other files is in "
                "the way (nothing of it was touched); move it out of the run folder"
            )
        if final.exists():  # a folder renamed by an attempt killed before its manifest: never published
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"cannot write checkpoint {str(final)!r}: {err.strerror or err}; the previous one is intact"
        ) from None
    atomic_write(manifest_path(root, name), lambda fh: fh.write(text))  # the commit point
    _remove_superseded(root, name, step)


def _manifest_text(
    step: int, folder: str, info: Mapping[str, Any], owners: dict[str, int], files: dict[str, Any]
) -> bytes:
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "step": int(step),
        "folder": folder,
        "info": dict(info),
        "entries": dict(sorted(owners.items())),
        "files": dict(sorted(files.items())),
    }
    manifest["sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    return json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"


def _write_folder_manifest(folder: Path, text: bytes) -> None:
    """The manifest's copy inside its folder (:data:`FOLDER_MANIFEST`), on disk before the folder is
    renamed."""
    with open(folder / FOLDER_MANIFEST, "wb") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def sweep(root: Path, name: str = "checkpoint") -> list[str]:
    """Remove what unfinished or superseded checkpoints left: temporary folders, and folders older than the
    step of the verified manifest; returns their names. Only folders holding nothing but this module's files
    are touched (never a user's own folder that happens to be named alike), and never a folder at or after
    the manifest's step (a newer complete checkpoint is recovered, not deleted: see
    :func:`complete_folders`). Call it, on one rank, while no save is under way."""
    try:
        step = read_manifest(root, name).step
    except UserError:
        step = -1  # no trustworthy manifest: only temporary folders go
    return _remove_superseded(Path(root), name, step)


def _remove_superseded(root: Path, name: str, step: int) -> list[str]:
    removed = []
    for path in root.iterdir() if root.is_dir() else ():
        found = folder_step(path.name, name)
        if found is None or not path.is_dir() or not is_own_folder(path):
            continue
        if path.name.startswith(".") or found < step:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def reinstate(manifest: Manifest, name: str = "checkpoint") -> None:
    """Make a complete folder's copy of its manifest (:func:`complete_folders`) the root's manifest again."""
    text = (manifest.folder / FOLDER_MANIFEST).read_bytes()
    atomic_write(manifest_path(manifest.root, name), lambda fh: fh.write(text))


def folder_step(folder: str, name: str = "checkpoint") -> int | None:
    """The step of a checkpoint folder's name (temporary or not); None for any other name."""
    if not _folder_pattern(name).match(folder):
        return None
    return int(folder.lstrip(".").removesuffix(".tmp").rsplit("-", 1)[1])


_OWN_FILE = re.compile(
    rf"^(\.metadata(\.tmp)?|__\d+_\d+\.distcp|__\d+\.metadata(\.tmp)?|{re.escape(FOLDER_MANIFEST)})$"
)


def is_own_folder(path: Path) -> bool:
    """Whether ``path`` holds nothing but what :func:`save` writes into a checkpoint folder."""
    try:
        with os.scandir(path) as entries:
            return all(_OWN_FILE.match(entry.name) and entry.is_file() for entry in entries)
    except OSError:
        return False


def complete_folders(root: Path, name: str = "checkpoint") -> list[Manifest]:
    """The complete checkpoints of ``root``, newest first, whatever its manifest says: every folder whose
    copy of its manifest (:data:`FOLDER_MANIFEST`) is intact and names that folder. The files' own sha256
    are checked when they are read, as always."""
    found = []
    for path in Path(root).iterdir() if Path(root).is_dir() else ():
        if path.name.startswith(".") or folder_step(path.name, name) is None or not path.is_dir():
            continue
        try:
            manifest = _parse_manifest(path / FOLDER_MANIFEST, Path(root), name)
        except UserError:
            continue
        if manifest.folder == path:
            found.append(manifest)
    return sorted(found, key=lambda m: m.step, reverse=True)


# -------------------------------------------------------------------------------------------- load
@dataclass(frozen=True)
class Manifest:
    """A verified manifest: where the checkpoint is and what it holds."""

    root: Path
    step: int
    folder: Path
    info: dict[str, Any]
    entries: dict[str, int]
    files: dict[str, dict[str, Any]]


def read_manifest(root: Path, name: str = "checkpoint") -> Manifest:
    """The manifest of ``root``'s checkpoint, its own sha256 checked (UserError when absent or damaged)."""
    return _parse_manifest(manifest_path(root, name), Path(root), name)


def _parse_manifest(path: Path, root: Path, name: str) -> Manifest:
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:
        raise UserError(
            f"checkpoint {str(path)!r} is corrupt or not a largemeta checkpoint ({err})"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UserError(f"checkpoint {str(path)!r} is not a {FORMAT} manifest")
    body = {k: v for k, v in raw.items() if k != "sha256"}
    if hashlib.sha256(_canonical(body)).hexdigest() != raw.get("sha256"):
        raise UserError(f"checkpoint {str(path)!r} is corrupt (sha256 mismatch: truncated or altered)")
    folder = str(raw.get("folder", ""))
    if Path(folder).name != folder or not _folder_pattern(name).match(folder) or folder.startswith("."):
        raise UserError(f"checkpoint {str(path)!r} names a folder outside its run folder: {folder!r}")
    files = raw.get("files")
    if not isinstance(files, dict) or METADATA not in files:
        raise UserError(f"checkpoint {str(path)!r} lists no {METADATA} file")
    for key, kinds in (("step", int), ("entries", dict), ("info", (dict, type(None)))):
        if not isinstance(raw.get(key), kinds) or isinstance(raw.get(key), bool):
            raise UserError(f"checkpoint {str(path)!r} is incomplete: {key} is missing or malformed")
    step, info, entries = raw["step"], dict(raw.get("info") or {}), dict(raw["entries"])
    return Manifest(Path(root), step, Path(root) / folder, info, entries, files)


def _verify(manifest: Manifest, relative: str) -> Path:
    path = manifest.folder / relative
    expected = manifest.files.get(relative)
    if expected is None:
        raise UserError(f"checkpoint file {str(path)!r} is not listed in its manifest")
    try:
        digest = sha256_file(path)
    except OSError as err:
        raise UserError(f"checkpoint file {str(path)!r} cannot be read: {err.strerror or err}") from None
    if digest != expected.get("sha256"):
        raise UserError(f"checkpoint file {str(path)!r} is corrupt (sha256 mismatch: truncated or altered)")
    return path


def read_metadata(manifest: Manifest) -> dcp_metadata.Metadata:
    """The folder's DCP metadata, checked against the manifest and parsed without executing code."""
    path = _verify(manifest, METADATA)
    return parse_metadata(path.read_bytes(), str(path))


def load(
    root: Path,
    keys: Iterable[str] | None = None,
    *,
    manifest: Manifest | None = None,
    name: str = "checkpoint",
) -> dict[str, Any]:
    """The entries ``keys`` (default: all) of ``root``'s checkpoint, on the CPU. Reads only the files that
    hold them, each verified first; needs no process group (every rank reads on its own)."""
    manifest = manifest or read_manifest(root, name)
    wanted = list(manifest.entries) if keys is None else list(keys)
    missing = [k for k in wanted if k not in manifest.entries]
    if missing:
        raise UserError(f"checkpoint {str(manifest.folder)!r} has no entry {missing[0]!r}")
    metadata = read_metadata(manifest)
    own = {k: re.compile(rf"^{re.escape(k)}/(\d+|{SKELETON}|pack-[a-z0-9]+)$") for k in wanted}
    fqns = [f for f in metadata.state_dict_metadata if any(p.match(f) for p in own.values())]
    needed = set(fqns)
    for relative in sorted(
        {i.relative_path for idx, i in metadata.storage_data.items() if idx.fqn in needed}
    ):
        _verify(manifest, relative)
    stored: dict[str, int] = {}
    for idx, info in metadata.storage_data.items():
        if idx.fqn in needed:
            if (
                info.offset < 0
                or info.length < 0
                or info.offset + info.length > manifest.files[info.relative_path]["bytes"]
            ):
                raise UserError(f"checkpoint {str(manifest.folder)!r}: {idx.fqn!r} lies outside its file")
            stored[idx.fqn] = stored.get(idx.fqn, 0) + info.length
    flat = {}
    for fqn in fqns:
        md = metadata.state_dict_metadata[fqn]
        nbytes = torch.Size(md.size).numel() * md.properties.dtype.itemsize
        if nbytes > stored.get(fqn, 0):  # never allocate what the files cannot hold
            raise UserError(
                f"checkpoint {str(manifest.folder)!r}: {fqn!r} is larger than the data stored for it"
            )
        flat[fqn] = torch.empty(tuple(md.size), dtype=md.properties.dtype)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_DIST_WARNING)
            dcp.load(flat, storage_reader=_Reader(manifest.folder, metadata), no_dist=True)
    except (CheckpointException, RuntimeError, OSError, pickle.UnpicklingError, AssertionError) as err:
        text = _failure_text(err)[1] if isinstance(err, CheckpointException) else str(err)
        raise UserError(
            f"checkpoint {str(manifest.folder)!r} cannot be read ({text.splitlines()[0][:160]})"
        ) from None
    out = {}
    for key in wanted:
        skeleton_key = f"{key}/{SKELETON}"
        if skeleton_key not in flat:
            raise UserError(f"checkpoint {str(manifest.folder)!r} lacks the structure of entry {key!r}")
        try:
            doc = json.loads(flat[skeleton_key].numpy().tobytes())
            out[key] = _unpack(doc, flat, key, own[key])
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(
                f"checkpoint {str(manifest.folder)!r}: entry {key!r} is malformed ({err})"
            ) from None
    return out
