"""Crafted checkpoints for the fault tests: edit a run folder's checkpoint and seal it again, so what is
tested is the reader's check of the content, not its checksum."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from largemeta import sharded_checkpoint


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
    manifest = sharded_checkpoint.read_manifest(run, "checkpoint")
    entries = sharded_checkpoint.load(run, manifest=manifest, name="checkpoint")
    info = dict(manifest.info)
    edit(entries, info)
    sharded_checkpoint.save(run, manifest.step, entries, info=info, name="checkpoint")
