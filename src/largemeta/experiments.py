"""The paper's experiments as functions: meta-test accuracy against cumulative inner steps (convergence),
against the horizon K (k-ablation), at each algorithm's best β (tune), and on top of a pretrained model.
Each algorithm trains once, resuming exactly from milestone to milestone; φ is evaluated at every milestone
with the meta-test protocol (:mod:`largemeta.metatest`). Everything lands in ``out/results.json`` plus one run
folder per trained model (usable as ``--init``); plots and reports read the JSON.

An experiment is resumable: ``results.json`` records the request (the command, its config and settings) and
each finished part (``done``), and is rewritten atomically after every part. Run again with the same request,
an experiment skips the finished parts (saying so), resumes a half-trained run folder from its checkpoint and
carries on; a different request on the same folder is refused, naming what differs. The folder is locked
while an experiment writes it (:func:`largemeta.runs.claim`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from largemeta import console, signals
from largemeta.data.tasks import TaskSpec, load_suite
from largemeta.errors import UserError
from largemeta.files import atomic_write_text
from largemeta.metatest import Init, load_init, meta_test, scratch
from largemeta.runs import METRICS, RESULTS, claim, has_checkpoint, read_results
from largemeta.stats import ci95
from largemeta.train import sharded_state
from largemeta.train.build import select_tasks
from largemeta.train.config import RESUMABLE_CHANGES, TRAIN_ALGORITHMS, TrainConfig
from largemeta.train.trainer import Trainer

__all__ = ["RESULTS", "EvalSettings", "Record", "convergence", "k_ablation", "pretrained", "table", "tune"]


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How φ is scored: the meta-test protocol's steps, seeds, batch size and training-set size."""

    steps: int = 1000
    seeds: int = 3
    batch_size: int = 128
    train_size: int | None = None
    targets: tuple[str, ...] = ()  # names of the suite's meta-test tasks (default: all)

    def score(self, init: Init, specs: list[TaskSpec], cfg: TrainConfig, *, device: str) -> dict[str, Any]:
        """The meta-test protocol with these settings (:func:`largemeta.metatest.meta_test`); the images are
        found and placed as the run's config says (``data_dir``, ``data_placement``, ...)."""
        return meta_test(
            init,
            specs,
            steps=self.steps,
            seeds=self.seeds,
            batch_size=self.batch_size,
            train_size=self.train_size,
            device=device,
            data_dir=cfg.data_dir or None,
            data_placement=cfg.data_placement,
            memory_budget_gb=cfg.memory_budget_gb,
            stream_workers=cfg.stream_workers,
        )


def targets_of(cfg: TrainConfig, names: Sequence[str]) -> list[TaskSpec]:
    specs = list(load_suite(cfg.suite).meta_test)
    if not names:
        return specs
    by = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by]
    if unknown:
        raise UserError(f"unknown meta-test task {unknown[0]!r} (valid: {', '.join(by)})")
    return [by[n] for n in names]


def milestones_of(steps: int, fractions: Sequence[float]) -> list[int]:
    out = sorted({max(1, round(steps * f)) for f in fractions if 0 < f <= 1})
    if not out:
        raise UserError(f"no milestone in (0, 1] among {list(fractions)}")
    return out


def _train_to(cfg: TrainConfig, run_dir: Path, steps: int) -> None:
    """Train ``run_dir`` to ``steps``: a new run, or its checkpoint resumed (the config must be the same)."""
    resume = has_checkpoint(run_dir)
    if resume and sharded_state.read(run_dir).step > steps:
        raise UserError(
            f"{str(run_dir)!r} is already past {steps} steps: it was not trained by this experiment"
        )
    trainer = Trainer(dataclasses.replace(cfg, steps=steps), run_dir, resume=resume)
    try:
        trainer.run()
    finally:
        trainer.close()
    signals.check()  # a signal that came with the last step: stop here, the run is saved


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [
        {"step": r["step"], "mean_loss": r["mean_loss"]}
        for r in map(json.loads, path.read_text().splitlines())
    ]


def request_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config keys that decide an experiment's results (how often to log or save, where the data sit and
    the device may change between two runs of it)."""
    return {k: v for k, v in cfg.to_dict().items() if k == "steps" or k not in RESUMABLE_CHANGES}


def _differing(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in dict.fromkeys([*old, *new])
            for d in _differing(old.get(k), new.get(k), f"{prefix}{k}.")
        ]
    return [] if old == new else [prefix.rstrip(".") or "request"]


class Record:
    """An experiment's ``results.json``: the request, the finished parts and the results so far.

    ``Record(out, skeleton, log)`` claims ``out`` (locked until :meth:`close`). A new folder gets
    ``skeleton`` (which holds ``request``); a folder holding the results of the same request is continued; any
    other folder is refused in one line before anything is written."""

    def __init__(self, out: Path, skeleton: dict[str, Any], log: Callable[[str], None]) -> None:
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
                raise UserError(
                    f"{str(folder)!r} holds the results of {what} with other settings "
                    f"({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''} differ); run the same command "
                    "to continue it, or pass another --out"
                )

        self.claim = claim(self.out, accept, what="experiment folder")
        self.log_file = contextlib.ExitStack()
        try:
            self.log_file.enter_context(console.log_file(self.out))
            console.header(f"{request['command']} -> {self.out}", _settings_shown(request))
            if (self.out / RESULTS).exists():
                self.result = read_results(self.out / RESULTS)
                done = self.result.setdefault("done", [])
                self.result["complete"] = False
                log(f"continuing the experiment in {self.out}: {len(done)} part(s) done before")
            else:
                self.result = {**skeleton, "done": [], "complete": False}
                self.save()
        except BaseException:
            self.log_file.close()
            self.claim.abandon()
            raise

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
        self.log_file.close()
        self.claim.release()

    def __enter__(self) -> Record:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(complete=kind is None)


def _settings_shown(request: dict[str, Any]) -> dict[str, Any]:
    """An experiment's header: what it compares, the budget and the evaluation."""
    cfg, ev = request["config"], request["eval"]
    shown = {
        k: ",".join(map(str, request[k]))
        for k in ("algos", "milestones", "ks", "betas", "sizes")
        if k in request
    }
    shown.update(
        {
            "suite": cfg.get("suite"),
            "steps": cfg.get("steps"),
            "K": cfg.get("k"),
            "β": cfg.get("meta_lr"),
            "eval": f"{ev['steps']} steps x {ev['seeds']} seeds",
        }
    )
    return shown


def _timed(entry: dict[str, Any], started: float) -> None:
    entry["seconds"] = round(entry.get("seconds", 0.0) + time.perf_counter() - started, 1)


def convergence(
    cfg: TrainConfig,
    algos: Sequence[str],
    out: Path,
    *,
    fractions: Sequence[float] = (0.25, 0.5, 1.0),
    settings: EvalSettings = EvalSettings(),
    device: str = "cpu",
    log: Callable[[str], None] = lambda s: None,
    command: str = "experiment convergence",
) -> dict[str, Any]:
    """Train each algorithm at an equal budget of ``cfg.steps`` inner steps per task; evaluate at
    milestones."""
    for a in algos:
        if a not in TRAIN_ALGORITHMS + ("scratch",):
            raise UserError(f"unknown algorithm {a!r} (valid: {', '.join(TRAIN_ALGORITHMS + ('scratch',))})")
    milestones = milestones_of(cfg.steps, fractions)
    specs = targets_of(cfg, settings.targets)
    eval_settings = dataclasses.asdict(settings)
    skeleton: dict[str, Any] = {
        "experiment": "convergence",
        "request": {
            "command": command,
            "config": request_config(cfg),
            "algos": list(algos),
            "milestones": milestones,
            "eval": eval_settings,
        },
        "config": cfg.to_dict(),
        "milestones": milestones,
        "eval": eval_settings,
        "algorithms": {},
    }
    channels = specs[0].channels

    def ev(init: Init) -> dict[str, Any]:
        return settings.score(init, specs, cfg, device=device)

    with Record(out, skeleton, log) as record:
        result = record.result
        for algo in algos:
            entry = result["algorithms"].setdefault(algo, {"accuracy": {}, "loss": []})
            if algo == "scratch":
                if not record.done("scratch"):
                    started = time.perf_counter()
                    r = ev(scratch(cfg.model, channels, cfg.width))
                    entry["accuracy"] = {str(m): r for m in milestones}
                    _timed(entry, started)
                    record.finish("scratch")
                continue
            run_dir = out / algo
            entry["run_dir"] = str(run_dir)
            for m in milestones:
                part = f"{algo} @ {m} steps"
                if record.done(part):
                    continue
                started = time.perf_counter()
                log(f"{algo}: training to {m} inner steps")
                _train_to(dataclasses.replace(cfg, algo=algo), run_dir, m)
                entry["accuracy"][str(m)] = ev(load_init(str(run_dir), model=cfg.model))
                entry["loss"] = _metrics(run_dir)
                log(f"{algo} @ {m}: mean accuracy {100 * entry['accuracy'][str(m)]['mean_accuracy']:.2f} %")
                _timed(entry, started)
                record.finish(part)
    return result


def k_ablation(
    cfg: TrainConfig,
    algos: Sequence[str],
    ks: Sequence[int],
    out: Path,
    *,
    settings: EvalSettings = EvalSettings(),
    device: str = "cpu",
    log: Callable[[str], None] = lambda s: None,
    command: str = "experiment k-ablation",
) -> dict[str, Any]:
    """Final meta-test accuracy against K for each algorithm, at the same budget."""
    specs = targets_of(cfg, settings.targets)
    eval_settings = dataclasses.asdict(settings)
    skeleton: dict[str, Any] = {
        "experiment": "k-ablation",
        "request": {
            "command": command,
            "config": request_config(cfg),
            "algos": list(algos),
            "ks": list(ks),
            "eval": eval_settings,
        },
        "config": cfg.to_dict(),
        "ks": list(ks),
        "eval": eval_settings,
        "algorithms": {},
    }
    with Record(out, skeleton, log) as record:
        result = record.result
        for algo in algos:
            by_k = result["algorithms"].setdefault(algo, {})
            for k in ks:
                part = f"{algo}, K = {k}"
                if record.done(part):
                    continue
                run_dir = out / f"{algo}_k{k}"
                log(part)
                _train_to(
                    dataclasses.replace(cfg, algo=algo, k=k, meta_every=min(cfg.meta_every, k)),
                    run_dir,
                    cfg.steps,
                )
                init = load_init(str(run_dir), model=cfg.model)
                by_k[str(k)] = settings.score(init, specs, cfg, device=device)
                record.finish(part)
    return result


def table(result: dict[str, Any]) -> str:
    """A Markdown table of mean accuracy ± 95 % interval (over seeds, averaged over targets); a part not
    finished yet (an experiment stopped half-way) is an empty cell."""
    if result["experiment"] == "tune":
        betas = [f"{b:g}" for b in result["betas"]]
        rows = [
            "| algorithm | " + " | ".join(f"val. β = {b}" for b in betas) + " | best β | meta-test |",
            "|---" * (len(betas) + 3) + "|",
        ]
        for algo, test in result["test"].items():
            val = result["validation"].get(algo, {})
            cells = [f"{100 * val[b]:.1f}" if b in val else "" for b in betas]
            rows.append(
                f"| {algo} | " + " | ".join(cells) + f" | {result['best'].get(algo, '—')} | {_cell(test)} |"
            )
        return "\n".join(rows)
    if result["experiment"] == "pretrained":
        sizes = [str(n) for n in result["sizes"]]
        rows = [
            "| start | " + " | ".join(f"{n} images" for n in sizes) + " |",
            "|---" * (len(sizes) + 1) + "|",
        ]
        for name, by_size in result["algorithms"].items():
            rows.append(f"| {name} | " + " | ".join(_cell(by_size.get(n)) for n in sizes) + " |")
        names = list(result["algorithms"])
        if len(names) == 2:
            first, second = (result["algorithms"][n] for n in names)
            gains = [
                f"{100 * (overall(second[n])[0] - overall(first[n])[0]):+.1f}"
                if n in first and n in second
                else "—"
                for n in sizes
            ]
            rows.append(f"| gain of {names[1]} | " + " | ".join(gains) + " |")
        return "\n".join(rows)
    if result["experiment"] == "convergence":
        cols = [str(m) for m in result["milestones"]]
        header = "| algorithm | " + " | ".join(f"{c} steps" for c in cols) + " |"
        rows = [header, "|---" * (len(cols) + 1) + "|"]
        for algo, entry in result["algorithms"].items():
            cells = [_cell(entry["accuracy"].get(c)) for c in cols]
            rows.append(f"| {algo} | " + " | ".join(cells) + " |")
        return "\n".join(rows)
    cols = [str(k) for k in result["ks"]]
    rows = ["| algorithm | " + " | ".join(f"K = {c}" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for algo, by_k in result["algorithms"].items():
        rows.append(f"| {algo} | " + " | ".join(_cell(by_k.get(c)) for c in cols) + " |")
    return "\n".join(rows)


def overall(r: dict[str, Any]) -> tuple[float, float]:
    """Target-averaged accuracy and its 95 % interval over seeds (each seed's accuracy averaged over
    targets)."""
    per_seed = [
        sum(vals) / len(vals) for vals in zip(*(t["per_seed"] for t in r["tasks"].values()), strict=True)
    ]
    return r["mean_accuracy"], ci95(per_seed)


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "—"
    mean, width = overall(r)
    return f"{100 * mean:.1f} ± {100 * width:.1f}"


def tune(
    cfg: TrainConfig,
    algos: Sequence[str],
    betas: Sequence[float],
    out: Path,
    *,
    validation: EvalSettings = EvalSettings(steps=100, seeds=2, batch_size=64),
    test: EvalSettings = EvalSettings(),
    device: str = "cpu",
    log: Callable[[str], None] = lambda s: None,
    command: str = "experiment tune",
) -> dict[str, Any]:
    """Fair tuning: each algorithm at its own best meta learning rate β, chosen on the *meta-training* tasks.

    Every (algorithm, β) trains at the same budget; its φ is scored on a validation split made of the
    meta-training tasks' own held-out images (limited-data fine-tuning, ``validation.train_size`` images per
    task); the best β per algorithm is then — and only then — evaluated on the meta-test targets. The
    meta-test targets never influence the choice.
    """
    if not betas or not all(math.isfinite(b) and b > 0 for b in betas):
        raise UserError(f"--betas must be finite numbers > 0, got {list(betas)}")
    val_specs = select_tasks(load_suite(cfg.suite).meta_train, cfg.tasks)
    test_specs = targets_of(cfg, test.targets)
    skeleton: dict[str, Any] = {
        "experiment": "tune",
        "request": {
            "command": command,
            "config": request_config(cfg),
            "algos": list(algos),
            "betas": list(betas),
            "validation_eval": dataclasses.asdict(validation),
            "eval": dataclasses.asdict(test),
        },
        "config": cfg.to_dict(),
        "betas": list(betas),
        "validation_eval": dataclasses.asdict(validation),
        "eval": dataclasses.asdict(test),
        "validation": {},
        "best": {},
        "test": {},
    }

    def ev(init: Init, specs: list[TaskSpec], s: EvalSettings) -> dict[str, Any]:
        return s.score(init, specs, cfg, device=device)

    with Record(out, skeleton, log) as record:
        result = record.result
        for algo in algos:
            scores = result["validation"].setdefault(algo, {})
            for beta in betas:
                part = f"{algo}, β = {beta:g}"
                if record.done(part):
                    continue
                run_dir = out / f"{algo}_beta{beta:g}"
                log(part)
                _train_to(dataclasses.replace(cfg, algo=algo, meta_lr=beta), run_dir, cfg.steps)
                init = load_init(str(run_dir), model=cfg.model)
                scores[f"{beta:g}"] = ev(init, val_specs, validation)["mean_accuracy"]
                record.finish(part)
            best = max(scores, key=scores.get)
            result["best"][algo] = best
            part = f"{algo} at its best β, on the meta-test targets"
            if not record.done(part):
                log(f"{algo}: best β = {best} (validation {100 * scores[best]:.2f} %)")
                init = load_init(str(out / f"{algo}_beta{best}"), model=cfg.model)
                result["test"][algo] = ev(init, test_specs, test)
                record.finish(part)
        if not record.done("scratch"):
            result["test"]["scratch"] = ev(
                scratch(cfg.model, test_specs[0].channels, cfg.width), test_specs, test
            )
            record.finish("scratch")
    return result


def pretrained(
    cfg: TrainConfig,
    init: str,
    sizes: Sequence[int],
    out: Path,
    *,
    settings: EvalSettings = EvalSettings(),
    device: str = "cpu",
    log: Callable[[str], None] = lambda s: None,
    command: str = "experiment pretrained",
) -> dict[str, Any]:
    """CTS on top of a pretrained model vs plain fine-tuning of that model, per target training-set size.

    ``init`` is fine-tuned directly (the baseline) and used as the starting φ of meta-training with
    ``cfg.algo`` (CTS by default); both are evaluated on the meta-test targets sub-sampled to each size.
    """
    specs = targets_of(cfg, settings.targets)
    eval_settings = dataclasses.asdict(settings)
    skeleton: dict[str, Any] = {
        "experiment": "pretrained",
        "request": {
            "command": command,
            "config": request_config(cfg),
            "init": init,
            "sizes": list(sizes),
            "eval": eval_settings,
        },
        "config": cfg.to_dict(),
        "init": init,
        "sizes": list(sizes),
        "eval": eval_settings,
        "algorithms": {},
    }
    with Record(out, skeleton, log) as record:
        result = record.result
        run_dir = out / cfg.algo
        if not record.done(f"meta-training {cfg.algo}"):
            log(f"meta-training {cfg.algo} from {init}")
            _train_to(dataclasses.replace(cfg, init=init), run_dir, cfg.steps)
            record.finish(f"meta-training {cfg.algo}")
        starts = {"finetune": init, cfg.algo: str(run_dir)}
        for name, source in starts.items():
            by_size = result["algorithms"].setdefault(name, {})
            start = None
            for n in sizes:
                part = f"{name}, {n} training images per target"
                if record.done(part):
                    continue
                log(part)
                start = start or load_init(source, model=cfg.model)
                sized = dataclasses.replace(settings, train_size=n)
                by_size[str(n)] = sized.score(start, specs, cfg, device=device)
                record.finish(part)
    return result
