"""The sharded checkpoint store (format ``largemeta-sharded-checkpoint-v2``) over
``torch.distributed.checkpoint`` (DCP): every rank writes what it owns.

A checkpoint is a set of named *entries* (any nest of dicts, lists, tuples, tensors, numbers and strings);
each entry is written by exactly one rank, the one that owns it, and read back by whichever ranks need it —
on any number of ranks, or in one process without a process group. On disk, in a folder ``ROOT``::

    ROOT/checkpoint.json               the manifest: the checkpoint, and the pointer to its folder
    ROOT/checkpoint-00000040/          one DCP checkpoint: .metadata + one __R_0.distcp file per writing rank,
                                       and manifest.json, a copy of the manifest that published it
    ROOT/.checkpoint-00000044.tmp/     a checkpoint being written (swept away at the next start)

**Format.** Each entry is stored as tensors only (:mod:`largemeta.checkpoint.entries`: its tensors, packs
of its small ones, and a JSON skeleton), so the DCP checkpoint holds no pickled "bytes" items. The manifest
(JSON) holds the format, the step, the caller's run record (``info``), the entries and who wrote them, and
the sha256 and size of every file of the folder, plus a sha256 of itself.

**Atomic.** Ranks write into the temporary folder (DCP fsyncs every file); after DCP's own completion round,
each rank hashes the files it wrote and sends the digests to rank 0, which hashes ``.metadata``, fsyncs the
folder, renames it to its final name, and only then replaces the manifest
(:func:`largemeta.files.atomic_write`: temporary file, fsync, rename, fsync of the folder). The manifest is
the commit point: a kill -9 at any moment leaves the previous manifest naming the previous, complete folder,
which is deleted only after the new manifest is in place. Left-overs (a temporary folder, a folder superseded
by a newer manifest) are removed by :func:`sweep`, which touches only folders holding nothing but this
module's files, and never a folder at or after the manifest's step: a folder renamed by a save killed before
its manifest, or one newer than a manifest put back by hand, is a complete checkpoint (its copy of the
manifest says so: :func:`complete_folders`) that a caller may recover, not debris.

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

from largemeta.checkpoint.entries import SKELETON, flatten, own_names, unflatten
from largemeta.errors import UserError
from largemeta.files import atomic_write, fsync_folder, sha256_file

FORMAT = "largemeta-sharded-checkpoint-v2"
METADATA = ".metadata"
MANIFEST = "checkpoint.json"
"""The manifest's name in its folder: the commit point and the pointer to the checkpoint's own folder."""
FOLDER = re.compile(r"^\.?checkpoint-\d{8,}(\.tmp)?$")
"""A checkpoint's folder (``checkpoint-NNNNNNNN``), or one being written (``.checkpoint-NNNNNNNN.tmp``)."""
FOLDER_MANIFEST = "manifest.json"
"""A copy of the manifest inside its checkpoint folder, written before the folder is renamed into place: a
folder whose run manifest was lost, damaged or replaced can still be verified and recovered."""
_NO_DIST_WARNING = r"torch\.distributed is disabled, unavailable or uninitialized"


def _folder_name(step: int) -> str:
    return f"checkpoint-{step:08d}"


def exists(root: Path) -> bool:
    """Whether ``root`` holds a sharded checkpoint (its manifest)."""
    return (Path(root) / MANIFEST).is_file()


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
) -> None:
    """Write checkpoint ``step`` of ``root``: a collective over ``group`` (every rank calls it with the
    entries it owns; entry names must be unique over all ranks); without a group, one process writes all.

    ``info`` (JSON values; rank 0's is kept) is stored in the manifest. Returns once the new checkpoint is
    published on every rank. A failure to write is a :class:`UserError` that leaves the previous checkpoint
    as it was; a lost peer surfaces as the ``RuntimeError`` of the failed collective.
    """
    root = Path(root)
    rank = _rank(group)
    tmp = root / f".{_folder_name(step)}.tmp"
    final = root / _folder_name(step)
    flat = flatten(entries)
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
            _publish(root, step, tmp, final, pieces, info or {})
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
    root: Path, step: int, tmp: Path, final: Path, pieces: list[Any], info: Mapping[str, Any]
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
        fsync_folder(tmp)
        if final.exists() and not is_own_folder(final):
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(
                f"cannot write checkpoint {str(final)!r}: a folder of that name holding other files is in "
                "the way (nothing of it was touched); move it out of the run folder"
            )
        if final.exists():  # a folder renamed by an attempt killed before its manifest: never published
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_folder(root)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"cannot write checkpoint {str(final)!r}: {err.strerror or err}; the previous one is intact"
        ) from None
    atomic_write(root / MANIFEST, lambda fh: fh.write(text))  # the commit point
    _remove_superseded(root, step)


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


def sweep(root: Path) -> list[str]:
    """Remove what unfinished or superseded checkpoints left: temporary folders, and folders older than the
    step of the verified manifest; returns their names. Only folders holding nothing but this module's files
    are touched (never a user's own folder that happens to be named alike), and never a folder at or after
    the manifest's step (a newer complete checkpoint is recovered, not deleted: see
    :func:`complete_folders`). Call it, on one rank, while no save is under way."""
    try:
        step = read_manifest(root).step
    except UserError:
        step = -1  # no trustworthy manifest: only temporary folders go
    return _remove_superseded(Path(root), step)


def _remove_superseded(root: Path, step: int) -> list[str]:
    removed = []
    for path in root.iterdir() if root.is_dir() else ():
        found = folder_step(path.name)
        if found is None or not path.is_dir() or not is_own_folder(path):
            continue
        if path.name.startswith(".") or found < step:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def reinstate(folder: Path) -> None:
    """Make a complete folder's copy of its manifest (:func:`complete_folders`) the manifest of the folder
    holding it again."""
    text = (Path(folder) / FOLDER_MANIFEST).read_bytes()
    atomic_write(Path(folder).parent / MANIFEST, lambda fh: fh.write(text))


def folder_step(folder: str) -> int | None:
    """The step of a checkpoint folder's name (temporary or not); None for any other name."""
    if not FOLDER.match(folder):
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


def complete_folders(root: Path) -> list[Manifest]:
    """The complete checkpoints of ``root``, newest first, whatever its manifest says: every folder whose
    copy of its manifest (:data:`FOLDER_MANIFEST`) is intact and names that folder. The files' own sha256
    are checked when they are read, as always."""
    found = []
    for path in Path(root).iterdir() if Path(root).is_dir() else ():
        if path.name.startswith(".") or folder_step(path.name) is None or not path.is_dir():
            continue
        try:
            manifest = _parse_manifest(path / FOLDER_MANIFEST, Path(root))
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

    @property
    def path(self) -> Path:
        return self.root / MANIFEST

    def load(self, keys: Iterable[str] | None = None) -> dict[str, Any]:
        """The entries ``keys`` (default: all), on the CPU (see :func:`load`)."""
        return _load(self, keys)


def read_manifest(root: Path) -> Manifest:
    """The manifest of ``root``'s checkpoint, its own sha256 checked (UserError when absent or damaged)."""
    return _parse_manifest(Path(root) / MANIFEST, Path(root))


def _parse_manifest(path: Path, root: Path) -> Manifest:
    if path.is_dir():
        raise UserError(f"checkpoint {str(path)!r} is a folder, not a checkpoint's manifest file")
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
    if Path(folder).name != folder or not FOLDER.match(folder) or folder.startswith("."):
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


def load(root: Path, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The entries ``keys`` (default: all) of ``root``'s checkpoint, on the CPU. Reads only the files that
    hold them, each verified first; needs no process group (every rank reads on its own)."""
    return _load(read_manifest(root), keys)


def _load(manifest: Manifest, keys: Iterable[str] | None) -> dict[str, Any]:
    wanted = list(manifest.entries) if keys is None else list(keys)
    missing = [k for k in wanted if k not in manifest.entries]
    if missing:
        raise UserError(f"checkpoint {str(manifest.folder)!r} has no entry {missing[0]!r}")
    metadata = read_metadata(manifest)
    own = {k: own_names(k) for k in wanted}
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
            out[key] = unflatten(key, flat)
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(
                f"checkpoint {str(manifest.folder)!r}: entry {key!r} is malformed ({err})"
            ) from None
    return out
