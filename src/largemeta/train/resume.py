"""A training run's folder: taking it for a new run or for ``--resume`` (the resume policy), and writing the
run's records once the run is built.

A new run takes an empty folder (or one holding a run that never wrote a checkpoint) and gets a new
identity. ``--resume`` takes a run folder with a checkpoint and continues it only when:

* the checkpoint belongs to the folder's run (``run.json``), a version-0.1 checkpoint being adopted;
* the config differs from the checkpoint's in resumable keys alone
  (:data:`~largemeta.train.config.RESUMABLE_CHANGES`), and ``steps`` is not below the steps already done;

* the body's code is the code the checkpoint was trained with (its source's sha256, recorded in the
  identity), or ``--allow-model-change`` records the change in the identity's ``model_changes``;

a checkpoint recovered from its folder (the run's manifest missing, or older than a complete folder beside it)
is named by the manifest again, with a warning saying why; then what killed or superseded saves left is swept
(only after the checkpoint is verified), a checkpoint of version 0.1's format is named as such
(it resumes as it is), and a ``config.json`` that is not the checkpoint's
config (edited or damaged) is warned about and rewritten from the checkpoint.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from largemeta.checkpoint import store
from largemeta.console import notice
from largemeta.errors import UserError
from largemeta.models.factory import describe_source, same_source, source_identity
from largemeta.runs import checkpoint, folder
from largemeta.runs.checkpoint import CheckpointOnDisk
from largemeta.runs.claim import Claim, accept_new_run, accept_run, claim
from largemeta.runs.names import CONFIG, METRICS
from largemeta.train.config import RESUMABLE_CHANGES, TrainConfig, diff, from_mapping, save_config


@dataclass
class Opened:
    """A run folder taken for this run: the claim (held until released), the identity the run continues
    under, and the checkpoint it resumes (None: a new run)."""

    claim: Claim
    identity: dict[str, Any]
    saved: CheckpointOnDisk | None


def open_run_folder(
    run_dir: Path, cfg: TrainConfig, resume: bool, allow_model_change: bool = False
) -> Opened:
    """Take ``run_dir`` for a new run (``resume`` False) or to continue its checkpoint with ``cfg``; a
    one-line error (and the folder given back as it was) when the policy refuses."""
    if not resume:
        identity = {**folder.new_identity(cfg.algo, cfg.seed), "model_source": source_identity(cfg.model)}
        return Opened(claim(run_dir, accept_new_run, what="run folder"), identity, None)
    with contextlib.ExitStack() as stack:
        held = stack.enter_context(claim(run_dir, accept_run, what="run folder", create=False))
        saved, identity = check_resume(run_dir, cfg, allow_model_change)
        if saved.format != store.FORMAT:
            notice(
                f"{str(saved.path)!r} is a {saved.format} checkpoint (version 0.1's single file): it is read "
                f"as it is, and the next checkpoint is written as {store.FORMAT}"
            )
        if saved.recovered is not None and saved.folder is not None:
            store.reinstate(saved.folder)
            warnings.warn(saved.recovered, stacklevel=3)
        store.sweep(run_dir)  # what killed or superseded saves left, once the checkpoint is verified
        try:
            copy: Any = folder.read_config(run_dir)
        except UserError:
            copy = None
        if copy is None or diff(copy, from_mapping(saved.config)):  # edited or lost: the checkpoint rules
            warnings.warn(
                f"{str(Path(run_dir) / CONFIG)!r} is not the checkpoint's config (edited or damaged); "
                f"it is ignored and rewritten from the checkpoint",
                stacklevel=3,
            )
        stack.pop_all()  # accepted: held until the trainer releases it
    return Opened(held, identity, saved)


def check_resume(
    run_dir: Path, cfg: TrainConfig, allow_model_change: bool = False
) -> tuple[CheckpointOnDisk, dict[str, Any]]:
    """The checkpoint ``--resume`` would continue with ``cfg`` and the identity it continues under, checked
    against the policy without writing anything (``train --dry-run`` asks this too); a one-line error when
    the policy refuses."""
    saved = checkpoint.read(run_dir)  # verified (sha256, the run's identity)
    identity = folder.check_identity(run_dir, saved.identity, saved.config)
    identity = _check_model_source(identity, cfg.model, saved.step, allow_model_change)
    differing = diff(saved.config, cfg)
    if differing:
        pairs = ", ".join(f"{k}: {saved.config.get(k)!r} -> {getattr(cfg, k)!r}" for k in differing)
        raise UserError(
            f"--resume with a different config (only {', '.join(RESUMABLE_CHANGES)} may change): {pairs}"
        )
    if saved.step > cfg.steps:
        raise UserError(f"--steps {cfg.steps} is below the {saved.step} steps already done")
    return saved, identity


def write_records(
    run_dir: Path, cfg: TrainConfig, identity: dict[str, Any], saved: CheckpointOnDisk | None
) -> dict[str, Any]:
    """config.json and run.json (copies), and metrics.jsonl (new, or cut back to the checkpoint's step);
    returns the last metrics line kept (empty: none)."""
    run_dir = Path(run_dir)
    # run.json first: a stop between the two leaves a folder that a new run (the same command) takes again
    folder.write_identity(run_dir, identity)
    save_config(cfg, run_dir / CONFIG)
    if saved is None:
        try:
            (run_dir / METRICS).write_text("")
        except OSError as err:
            raise UserError(f"cannot write {str(run_dir / METRICS)!r}: {err.strerror or err}") from None
        return {}
    return folder.cut_metrics(run_dir / METRICS, saved.step)


def _check_model_source(identity: dict[str, Any], model: str, step: int, allow: bool) -> dict[str, Any]:
    """The identity to continue with: a body whose code is not the code the checkpoint was trained with (a
    file or module edited since) is refused, or with ``allow`` continued and the change recorded in the
    identity's ``model_changes`` (a checkpoint from before sources were recorded gets today's source)."""
    current = source_identity(model)
    if "model_source" not in identity:
        return {**identity, "model_source": current}
    recorded = identity["model_source"]
    if same_source(recorded, current):
        return identity
    if not allow:
        raise UserError(
            f"model {model!r} is not the code this run was trained with: {describe_source(recorded)} then, "
            f"{describe_source(current)} now; put that code back, or resume with --allow-model-change to "
            "continue with this code (the change is recorded in the run)"
        )
    change = {"step": step, "from": recorded, "to": current}
    return {
        **identity,
        "model_source": current,
        "model_changes": [*identity.get("model_changes", []), change],
    }
