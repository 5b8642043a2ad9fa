"""An experiment's ``results.json``: the request, the finished parts and the results so far.

An experiment is resumable: ``results.json`` records the request (the command, its config and settings) and
each finished part (``done``), and is rewritten atomically after every part. Run again with the same request,
an experiment skips the finished parts (saying so), resumes a half-trained run folder from its checkpoint and
carries on; a different request on the same folder is refused, naming what differs. The folder is locked
while an experiment writes it (:func:`largemeta.runs.claim.claim`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from largemeta import console, signals
from largemeta.errors import UserError
from largemeta.files import atomic_write_text
from largemeta.runs.claim import claim
from largemeta.runs.names import RESULTS
from largemeta.runs.results import read_results


def _differing(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in dict.fromkeys([*old, *new])
            for d in _differing(old.get(k), new.get(k), f"{prefix}{k}.")
        ]
    return [] if old == new else [prefix.rstrip(".") or "request"]


def _value(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


class Record:
    """An experiment's ``results.json``: the request, the finished parts and the results so far.

    ``Record(out, skeleton, log)`` claims ``out`` (locked until :meth:`close`). A new folder gets
    ``skeleton`` (which holds ``request``); a folder holding the results of the same request is continued; any
    other folder is refused in one line before anything is written."""

    def __init__(
        self,
        out: Path,
        skeleton: dict[str, Any],
        log: Callable[[str], None],
        *,
        environment: dict[str, Any] | None = None,
        protocol: dict[str, Any] | None = None,
    ) -> None:
        self.out, self.log = Path(out), log
        skeleton = json.loads(json.dumps(skeleton))  # what the file will hold, lists for tuples
        request = skeleton["request"]

        def accept(folder: Path, names: list[str]) -> None:
            if RESULTS not in names:
                if names:
                    raise UserError(
                        f"{str(folder)!r} is not empty and holds no experiment (no {RESULTS}); nothing was "
                        "written: pass a new or empty --out"
                    )
                return
            old = read_results(folder / RESULTS).get("request")
            if not isinstance(old, dict):
                raise UserError(
                    f"{str(folder / RESULTS)!r} was written by another command or an earlier version (it "
                    "records no request to continue); pass another --out"
                )
            if old != request:
                what = f"'largemeta {old.get('command')}'"
                keys = _differing(old, request)
                hint = "run the same command to continue it, or pass another --out"
                budget = [k for k in keys if k.rsplit(".", 1)[-1] == "steps"]
                if budget and all(k in budget or k == "milestones" for k in keys):  # the budget alone
                    was, now = _value(old, budget[0]), _value(request, budget[0])
                    hint = (
                        f"its runs were trained to {was} steps, and its milestones are fractions of that: "
                        f"continue it with --steps {was}, or pass another --out to run the experiment at "
                        f"{now} steps (to train one of its runs further on its own: largemeta train --resume "
                        f"{folder}/ALGO --steps {now})"
                    )
                raise UserError(
                    f"{str(folder)!r} holds the results of {what} with other settings "
                    f"({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''} differ); {hint}"
                )

        with contextlib.ExitStack() as held:  # given back as found if this fails
            held.enter_context(claim(self.out, accept, what="experiment folder"))
            held.enter_context(console.log_file(self.out))
            shown = _settings_shown(request, skeleton.get("config", {}).get("device"))
            console.header(f"{request['command']} -> {self.out}", shown)
            if (self.out / RESULTS).exists():
                self.result = read_results(self.out / RESULTS)
                done = self.result.setdefault("done", [])
                self.result["complete"] = False
                if environment is not None and self.result.get("environment") != environment:
                    # a continuation elsewhere (or by another version): each environment is kept
                    if "environment" not in self.result:
                        self.result["environment"] = environment
                    elif environment not in self.result.setdefault("continued_in", []):
                        self.result["continued_in"].append(environment)
                if protocol is not None:
                    self.result["protocol"] = protocol
                log(f"continuing the experiment in {self.out}: {len(done)} part(s) done before")
            else:
                extra = {"environment": environment} if environment is not None else {}
                extra.update({"protocol": protocol} if protocol is not None else {})
                self.result = {**skeleton, **extra, "done": [], "complete": False}
                self.save()
            self._held = held.pop_all()  # the log file and the claim, released by close()

    def done(self, part: str) -> bool:
        """Whether ``part`` was finished before (then skipped, saying so)."""
        if part in self.result["done"]:
            self.log(f"{part}: done before, skipped")
            return True
        signals.check()
        return False

    def finish(self, part: str) -> None:
        self.result["done"].append(part)
        self.save()

    def save(self) -> None:
        atomic_write_text(self.out / RESULTS, json.dumps(self.result, indent=1) + "\n")

    def close(self, complete: bool = False) -> None:
        if complete:
            self.result["complete"] = True
            self.save()
        self._held.close()

    def __enter__(self) -> Record:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(complete=kind is None)


def _settings_shown(request: dict[str, Any], device: str | None = None) -> dict[str, Any]:
    """An experiment's header: what it compares, where it runs, the budget and the evaluation."""
    cfg, ev = request["config"], request["eval"]
    shown = {
        k: ",".join(map(str, request[k]))
        for k in ("algos", "milestones", "ks", "betas", "sizes")
        if k in request
    }
    shown.update(
        {
            "device": device,
            "suite": cfg.get("suite"),
            "steps": cfg.get("steps"),
            "K": cfg.get("k"),
            "β": cfg.get("meta_lr"),
            "eval": f"{ev['steps']} steps x {ev['seeds']} seeds",
            "train seeds": request.get("train_seeds"),
        }
    )
    return shown
