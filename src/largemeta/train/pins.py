"""What a run reads, pinned in its identity as the body's code is (``model_source``): the suite and the data.

A run's identity (``run.json``, and every checkpoint's) records under ``data``:

* ``suite``: where it was read from (a built-in name or an absolute path), the sha256 of its file, and the
  resolved meta-train task specs the run trains (dataset, classes, sizes, augmentation, splits);
* ``datasets``: each dataset those tasks read, by :func:`largemeta.data.sources.identity.dataset_identity` (a
  registered dataset's arrays' sha256 from its cache entry's ``meta.json``, a folder's listing, an
  ``.npz``'s sha256, hashed again only when its stamp changed).

``--resume`` compares the data as it is now with the record: a task spec or a dataset that differs is
refused in one line naming what changed, unless ``--allow-data-change``, which continues and appends the
change to the identity's ``data_changes`` (``{"step", "changed", "from", "to"}``). A suite file whose bytes
changed while the tasks it resolves to did not (a comment, a meta-test target) is one warning line, and the
new sha256 is recorded. A run from before data was recorded gets today's record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largemeta.console import notice
from largemeta.data.sources.identity import dataset_identity, describe_change, same_dataset
from largemeta.data.tasks.suite import TaskSpec, builtin_suite_file, list_suites
from largemeta.errors import UserError


def data_identity(
    suite: str, specs: Sequence[TaskSpec], data_dir: str, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The record of what a run trains on now: ``suite`` (the config's), ``specs`` (its resolved meta-train
    tasks); ``previous``: the run's earlier record (its stamps spare re-hashing)."""
    before = (previous or {}).get("datasets", {})
    datasets = {}
    for spec in specs:
        if spec.dataset not in datasets:
            datasets[spec.dataset] = dataset_identity(
                spec.dataset, data_dir or None, before.get(spec.dataset)
            )
    return {
        "suite": {"source": suite, "sha256": _suite_sha256(suite), "tasks": [s.to_dict() for s in specs]},
        "datasets": datasets,
    }


def _suite_sha256(suite: str) -> str | None:
    try:
        path = builtin_suite_file(suite) if suite in list_suites() else Path(suite).expanduser()
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two :func:`data_identity` records, each in a few words (empty: the same data;
    a suite file edited without changing its tasks is not a change of data)."""
    out: list[str] = []
    then = {t["name"]: t for t in recorded.get("suite", {}).get("tasks", [])}
    now = {t["name"]: t for t in current["suite"]["tasks"]}
    for name in then.keys() - now.keys():
        out.append(f"task {name!r} is gone from the suite")
    for name in now.keys() - then.keys():
        out.append(f"task {name!r} is new in the suite")
    for name in [n for n in now if n in then]:
        diffs = [
            f"{k} {then[name].get(k)!r} -> {v!r}" for k, v in now[name].items() if then[name].get(k) != v
        ]
        if diffs:
            out.append(f"task {name!r}: {', '.join(diffs)}")
    before = recorded.get("datasets", {})
    for name, ident in current["datasets"].items():
        if name in before and not same_dataset(before[name], ident):
            out.append(describe_change(name, before[name], ident))
    return out


def pin_data(
    identity: dict[str, Any], current: dict[str, Any], step: int | None, allow: bool, run_dir: Path
) -> dict[str, Any]:
    """The identity to continue with: ``current`` recorded for a new run (``step`` None); resuming at
    ``step``, a difference from the recorded data refused in one line, or with ``allow`` recorded in
    ``data_changes``."""
    recorded = identity.get("data")
    if step is None or not isinstance(recorded, dict):
        return {**identity, "data": current}
    changed = changes(recorded, current)
    if not changed:
        if recorded.get("suite", {}).get("sha256") != current["suite"]["sha256"]:
            notice(
                f"suite {current['suite']['source']!r} was edited since this run recorded it; the tasks it "
                "trains are unchanged, so the run continues (its new sha256 is recorded)"
            )
        return {**identity, "data": current}
    if not allow:
        raise UserError(
            f"the data of run {str(run_dir)!r} changed since it was recorded: {'; '.join(changed)}; put it "
            "back, or resume with --allow-data-change to continue with it (recorded in the run as "
            "data_changes)"
        )
    change = {"step": step, "changed": changed, "from": recorded, "to": current}
    return {**identity, "data": current, "data_changes": [*identity.get("data_changes", []), change]}
