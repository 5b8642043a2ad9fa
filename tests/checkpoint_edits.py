"""Checkpoints for the tests: a run folder's checkpoint read whole (:func:`read_all`) and its φ (:func:`phi`),
and crafted ones — edit a run folder's checkpoint and seal it again, so what is tested is the reader's check
of the content, not its checksum."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from largemeta.checkpoint import store
from largemeta.runs import checkpoint


def published_step(run: Path) -> int | None:
    """The step of the checkpoint a run folder's manifest names, read from ``checkpoint.json`` alone (None
    while there is none): safe to poll while the run trains, unlike reading the checkpoint's folder, which
    the next save may remove meanwhile."""
    try:
        return int(json.loads((Path(run) / "checkpoint.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reseal_manifest(run: Path, edit) -> None:
    """Let ``edit(manifest_dict)`` change a run folder's checkpoint manifest, then seal it again with a valid
    sha256 — what a crafted checkpoint (right checksum, wrong content) looks like."""
    path = Path(run) / "checkpoint.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    manifest["sha256"] = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    path.write_text(json.dumps(manifest))


def rewrite_checkpoint(run: Path, edit) -> None:
    """Read a run folder's checkpoint whole, let ``edit(entries, info)`` change it, and write it back as a
    valid, checksummed checkpoint at the same step."""
    manifest = store.read_manifest(run)
    entries = manifest.load()
    info = dict(manifest.info)
    edit(entries, info)
    store.save(run, manifest.step, entries, info=info)


def read_all(run: Path) -> dict:
    """A run folder's whole checkpoint (either format) in one process, laid out as one dict: its ``info``
    keys, ``step``, ``shared``, and ``tasks`` (entry task/<i> at index i) or, with a pool, ``slots``
    (slot/<s>) and ``pool`` (the draw, and ``tasks``: pooltask/<p> at index p, None when never drawn)."""
    on_disk = checkpoint.read(run)
    got = on_disk.load()
    names = list(on_disk.info["task_names"])
    whole = {**on_disk.info, "step": on_disk.step, "shared": got["shared"]}
    if on_disk.pooled:
        slots = int(on_disk.config.get("tasks_per_trajectory", 0))
        whole["pool"] = {
            **got["pool"],
            "tasks": [got.get(checkpoint.pool_task_entry(p)) for p in range(len(names))],
        }
        whole["slots"] = [got.get(checkpoint.slot_entry(s)) for s in range(slots)]
    else:
        whole["tasks"] = [got.get(checkpoint.task_entry(i)) for i in range(len(names))]
    return whole


def phi(run: Path) -> dict:
    """φ of a run folder's checkpoint (its ``shared`` entry's ``phi``)."""
    return read_all(Path(run))["shared"]["phi"]
