"""``largemeta experiment KIND`` (one sub-command per experiment kind registered in
:mod:`largemeta.experiments`), ``largemeta report`` and ``largemeta demo``.

Experiments and the demo are resumable: stopped by SIGTERM or SIGINT they exit 75 (what is finished stays in
``OUT/results.json``, a half-trained run keeps its checkpoint), and the same command run again carries on.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from largemeta.cli.common import check_device_flag, positive_int, print_json
from largemeta.devices import HELP as DEVICE_HELP
from largemeta.errors import Preempted, Stopped, UserError

RESUMABLE = (
    "stopped by SIGTERM or SIGINT, it exits 75 and the same command run again continues where it stopped "
    "(finished parts are not redone)"
)


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--eval-steps", type=positive_int, default=1000, help="fine-tuning steps per target (1000)"
    )
    p.add_argument("--seeds", type=positive_int, default=3, help="evaluation seeds (3)")
    p.add_argument("--eval-batch-size", type=positive_int, default=128)
    p.add_argument(
        "--train-size", type=positive_int, help="sub-sample each target's training set to this size"
    )
    p.add_argument("--targets", help="comma list of the suite's meta-test tasks (default: all)")


def _common(p: argparse.ArgumentParser, algos: str) -> None:
    p.add_argument("--config", default="offline", help="TOML config or shipped name (offline)")
    p.add_argument(
        "--algos",
        default=algos,
        help=f"comma list of 'largemeta algorithms' names, or scratch (a randomly initialized body, "
        f"evaluated without meta-training: the baseline); default {algos}",
    )
    p.add_argument("--out", required=True, help=f"results folder (new, or this experiment's: {RESUMABLE})")
    p.add_argument("--steps", type=positive_int, help="budget: cumulative inner steps per task")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--device",
        help=f"where to train and fine-tune: {DEVICE_HELP}; overrides the config's device (auto in the "
        "shipped configs)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the results as JSON (and nothing else on stdout)"
    )
    _train_seeds_arg(p)
    _eval_args(p)


def _train_seeds_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--train-seeds",
        type=positive_int,
        default=1,
        help="meta-train every algorithm this many times, with seeds seed, seed+1, … (separate run folders "
        "ALGO_seedS): the paired intervals then include meta-training variance (1)",
    )


def _jobs_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--jobs",
        type=positive_int,
        help="run up to this many parts at once (independent meta-training runs, β being tuned), each in a "
        "worker process on an equal share of the CPU cores; the results are the same as one at a time "
        f"(default {default})",
    )


def register(sub: argparse._SubParsersAction) -> None:
    from largemeta.experiments import EXPERIMENTS

    exp = sub.add_parser("experiment", help=f"the paper's experiments: {', '.join(EXPERIMENTS)}")
    cmds = exp.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    cmds.required = True
    for name in EXPERIMENTS:
        spec = EXPERIMENTS.get(name)
        p = cmds.add_parser(name, help=spec.help)
        _common(p, spec.algos)
        if spec.parallel:
            _jobs_arg(p, "1")
        spec.add_arguments(p)
        p.set_defaults(func=run_experiment, resumable=True)

    rep = sub.add_parser("report", help="Markdown + self-contained HTML report of a results folder")
    rep.add_argument("dir", help="a results folder of an experiment or the demo (holding results.json)")
    rep.set_defaults(func=run_report)

    demo = sub.add_parser("demo", help="the main job: CTS vs Reptile vs Leap vs scratch on the offline suite")
    demo.add_argument("--out", default="runs/demo", help=f"results folder (runs/demo); {RESUMABLE}")
    demo.add_argument("--json", action="store_true")
    demo.add_argument("--steps", type=positive_int, default=None, help="budget (default: the demo's)")
    demo.add_argument("--device", help=f"where to train and fine-tune: {DEVICE_HELP}")
    demo.add_argument(
        "--train-seeds",
        type=positive_int,
        help="meta-train every algorithm this many times (default: the demo's, 2): the paired intervals "
        "then include meta-training variance",
    )
    _jobs_arg(p=demo, default="2 on a CPU with 2 cores or more, else 1")
    demo.set_defaults(func=run_demo, resumable=True)


def _config(args: argparse.Namespace):
    from largemeta.cli.train import overrides
    from largemeta.train.config import load_config

    return load_config(args.config, overrides(args, flags=("steps", "device")))


@contextmanager
def _resumable(out: str) -> Iterator[None]:
    """A signal stops the experiment resumably: exit 75 with how to continue."""
    try:
        yield
    except (Preempted, Stopped) as err:
        raise Preempted(
            f"stopped by {err.signal_name}; finished parts are kept in {out}/results.json and a half-trained "
            "run keeps its checkpoint: run the same command again to continue",
            signal_name=err.signal_name,
        ) from None


def _settings(args: argparse.Namespace):
    from largemeta.experiments import EvalSettings

    targets = tuple(t.strip() for t in (args.targets or "").split(",") if t.strip())
    return EvalSettings(args.eval_steps, args.seeds, args.eval_batch_size, args.train_size, targets)


def _log(text: str) -> None:
    from largemeta.console import log

    log.info(text)


def _track(cfg, out: Path, result: dict) -> None:
    """The experiment's results to the run config's trackers (each trained run logged itself)."""
    from largemeta.trackers import log_results
    from largemeta.train.config import tracker_names

    names = tracker_names(cfg)
    if names:
        log_results(names, out, {"command": result["request"]["command"], **cfg.to_dict()}, result)


def run_experiment(args: argparse.Namespace) -> int:
    from largemeta.experiments import EXPERIMENTS, Common, table

    check_device_flag(args)  # before any work
    spec = EXPERIMENTS.get(args.experiment)
    cfg = _config(args)  # holds --device: the experiment trains and fine-tunes there
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    jobs = getattr(args, "jobs", None) or 1
    common = Common(algos, Path(args.out), _settings(args), None, _log, args.train_seeds, jobs=jobs)
    result = _run(spec, cfg, common, spec.own(args))
    print_json(result) if args.json else print(table(result))
    return 0


def _run(spec, cfg, common, own: dict) -> dict:
    """Run the experiment kind ``spec`` (resumably), draw its figures and send its results to the trackers."""
    with _resumable(str(common.out)):
        result = spec.run(cfg, common, **own)
    spec.plots(result, common.out)
    _track(cfg, common.out, result)
    return result


def run_report(args: argparse.Namespace) -> int:
    from largemeta.report import write_report

    if not Path(args.dir).is_dir():
        raise UserError(f"report folder {args.dir!r} does not exist")
    md, page = write_report(Path(args.dir))
    print(f"wrote {md} and {page}")
    return 0


@dataclasses.dataclass(frozen=True)
class Demo:
    """The main job: one registered experiment kind run on a preset sized for 2 CPU cores."""

    kind: str
    """The experiment kind (a name of :data:`largemeta.experiments.EXPERIMENTS`)."""
    config: dict
    """``--set`` overrides of the shipped ``offline`` config."""
    eval: dict
    """The meta-test protocol (:class:`largemeta.experiments.EvalSettings`)."""
    algos: tuple[str, ...]
    own: dict
    """The kind's own keywords (``validation``: an :class:`~largemeta.experiments.EvalSettings` as a dict)."""
    train_seeds: int = 1
    """How many times each algorithm is meta-trained (``--train-seeds`` overrides it)."""


# The offline suite's convergence experiment, sized for 2 CPU cores (two parts at once, --jobs): CTS at the
# config's β against Reptile and Leap at their own best β (chosen on the meta-training tasks' held-out images,
# never on the targets), each meta-trained twice, fine-tuned on every training image of the held-out QuickDraw
# targets (80 per class, all the data hold). Width, fine-tuning steps and K were chosen by the validation-only
# sweep of scripts/demo_sweep.py within the 10-minute budget (docs/results.md, "How the demo was sized").
DEMO = Demo(
    kind="convergence",
    config={"steps": 2000, "width": 16, "batch_size": 16, "k": 100, "log_every": 50, "checkpoint_every": 500},
    eval={
        "steps": 200,
        "seeds": 2,
        "batch_size": 64,
        "train_size": None,
        "targets": ("quickdraw_t1", "quickdraw_t2", "quickdraw_t3"),
    },
    algos=("cts", "reptile", "leap", "scratch"),
    own={
        "fractions": (0.25, 0.5, 1.0),
        "tune": {"reptile": (0.1, 1.0), "leap": (0.1, 1.0)},
        "tune_fraction": 0.25,
        "validation": {"steps": 100, "seeds": 1, "batch_size": 64, "train_size": 200},
    },
    train_seeds=2,
)


def _demo_jobs(device: str) -> int:
    """The demo's parts two at a time on a CPU with two cores or more (its two meta-training seeds, the two
    βs of a tuning, side by side), one at a time on an accelerator (not measured there)."""
    from largemeta.devices import resolve_device
    from largemeta.experiments.pool import cores

    return min(2, cores()) if resolve_device(device).type == "cpu" else 1


def run_demo(args: argparse.Namespace) -> int:
    from largemeta.data.sources.datasets import fetch_dataset
    from largemeta.data.tasks.suite import load_suite
    from largemeta.experiments import EXPERIMENTS, Common, EvalSettings, overall, table
    from largemeta.report import write_report
    from largemeta.train.config import load_config

    check_device_flag(args)  # before any work
    started = time.perf_counter()
    out = Path(args.out)
    given = {k: v for k, v in {"steps": args.steps, "device": args.device}.items() if v is not None}
    cfg = load_config("offline", {**DEMO.config, **given})
    settings = EvalSettings(**DEMO.eval)
    with _resumable(args.out):
        for name in sorted(load_suite(cfg.suite).datasets()):
            _log(f"dataset {name}")
            fetch_dataset(name)
    train_seeds = args.train_seeds or DEMO.train_seeds
    jobs = args.jobs or _demo_jobs(cfg.device)
    common = Common(list(DEMO.algos), out, settings, None, _log, train_seeds, command="demo", jobs=jobs)
    own = dict(DEMO.own)
    if isinstance(own.get("validation"), dict):
        own["validation"] = EvalSettings(**own["validation"])
    result = _run(EXPERIMENTS.get(DEMO.kind), cfg, common, own)
    md, page = write_report(out)
    seconds = time.perf_counter() - started
    if args.json:
        print_json(
            {
                "milestones": result["milestones"],
                "seconds": round(seconds, 1),
                "algorithms": {
                    a: {m: overall(e["accuracy"][m])[0] for m in e["accuracy"]}
                    for a, e in result["algorithms"].items()
                },
                "meta_updates": {
                    a: e["meta_updates"] for a, e in result["algorithms"].items() if "meta_updates" in e
                },
                "comparisons": result["comparisons"],
                "tuning": result.get("tuning", {}),
                "steps_to_reach": result.get("steps_to_reach", []),
                "report": str(page),
            }
        )
        return 0
    from largemeta.experiments.reach import sentence

    runs = f" × {train_seeds} meta-training runs" if train_seeds > 1 else ""
    images = f"{settings.train_size} training images" if settings.train_size else "every training image"
    print(
        f"Meta-test accuracy (%, ± 95 % interval over {settings.seeds} seeds{runs}) on held-out QuickDraw "
        f"classes ({images} per target, {settings.steps} fine-tuning steps), "
        "against cumulative inner steps per meta-training task:"
    )
    print(table(result))
    for algo, tuned in result.get("tuning", {}).items():
        scores = ", ".join(f"β = {b}: {100 * v:.1f} %" for b, v in tuned["validation"].items())
        print(f"{algo} at its best β = {tuned['best']} (validation on the meta-training tasks: {scores})")
    last = result["milestones"][-1]
    for record in result.get("steps_to_reach", []):
        print(sentence(record, last))
    folders = f"{out}/<algo>" if train_seeds == 1 else f"{out}/<algo>_seed<S>"
    print(f"report: {page}   final φ of each algorithm: {folders} (usable as --init)", end="")
    print(f"   ({seconds / 60:.1f} min)")
    return 0
