"""``largemeta experiment`` (convergence, k-ablation, tune, pretrained), ``largemeta report`` and ``largemeta
demo``.

Experiments and the demo are resumable: stopped by SIGTERM or SIGINT they exit 75 (what is finished stays in
``OUT/results.json``, a half-trained run keeps its checkpoint), and the same command run again carries on.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from largemeta.cli.common import positive_int, print_json
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
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (cpu)")
    p.add_argument(
        "--json", action="store_true", help="print the results as JSON (and nothing else on stdout)"
    )
    _eval_args(p)


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser(
        "experiment", help="the paper's experiments: convergence, k-ablation, tune, pretrained"
    )
    cmds = exp.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    cmds.required = True
    conv = cmds.add_parser("convergence", help="meta-test accuracy vs cumulative inner steps, per algorithm")
    _common(conv, "cts,reptile,leap,fomaml,imaml")
    conv.add_argument(
        "--milestones",
        default="0.025,0.05,0.1,0.25,0.5,1",
        help="fractions of the budget at which φ is evaluated",
    )
    conv.set_defaults(func=run_convergence, resumable=True)
    kab = cmds.add_parser("k-ablation", help="meta-test accuracy vs K")
    _common(kab, "cts,reptile,leap")
    kab.add_argument("--ks", default="10,100,1000", help="comma list of K")
    kab.set_defaults(func=run_k_ablation, resumable=True)

    tun = cmds.add_parser(
        "tune", help="fair tuning: each algorithm at its best β, chosen on the meta-training tasks"
    )
    _common(tun, "cts,reptile,leap")
    tun.add_argument("--betas", default="0.003,0.01,0.03,0.1,0.3,1", help="meta learning rates to try")
    tun.add_argument(
        "--val-steps", type=positive_int, default=100, help="fine-tuning steps for validation (100)"
    )
    tun.add_argument("--val-seeds", type=positive_int, default=2)
    tun.add_argument(
        "--val-train-size",
        type=positive_int,
        default=200,
        help="training images per meta-training task when validating (200)",
    )
    tun.set_defaults(func=run_tune, resumable=True)
    pre = cmds.add_parser("pretrained", help="CTS on top of a pretrained model vs plain fine-tuning of it")
    _common(pre, "cts")
    pre.add_argument("--init", required=True, help="RUN_DIR, FILE.safetensors or torchvision:resnet18")
    pre.add_argument("--sizes", default="500,1000,2000,5000", help="target training-set sizes")
    pre.set_defaults(func=run_pretrained, resumable=True)

    rep = sub.add_parser("report", help="Markdown + self-contained HTML report of a results folder")
    rep.add_argument("dir", help="a results folder of an experiment or the demo (holding results.json)")
    rep.set_defaults(func=run_report)

    demo = sub.add_parser("demo", help="the main job: CTS vs Reptile vs Leap vs scratch on the offline suite")
    demo.add_argument("--out", default="runs/demo", help=f"results folder (runs/demo); {RESUMABLE}")
    demo.add_argument("--json", action="store_true")
    demo.add_argument("--steps", type=positive_int, default=None, help="budget (default: the demo's)")
    demo.set_defaults(func=run_demo, resumable=True)


def _ints(text: str, what: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{what} {text!r} is not a comma list of integers") from None
    if not out or min(out) < 1:
        raise UserError(f"{what} {text!r}: every value must be >= 1")
    return out


def _floats(text: str, what: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{what} {text!r} is not a comma list of numbers") from None
    if not out or not all(math.isfinite(x) and x > 0 for x in out):
        raise UserError(f"{what} {text!r}: every value must be a finite number > 0")
    return out


def _config(args: argparse.Namespace):
    from largemeta.cli.train import overrides
    from largemeta.train.config import load_config

    return load_config(args.config, overrides(args, flags=("steps",)))


@contextmanager
def _resumable(out: str) -> Iterator[None]:
    """A signal stops the experiment resumably: exit 75 with how to continue."""
    try:
        yield
    except (Preempted, Stopped) as err:
        what = getattr(err, "signal", None) or getattr(err, "signal_name", "a signal")
        raise Preempted(
            f"stopped by {what}; finished parts are kept in {out}/results.json and a half-trained run keeps "
            "its checkpoint: run the same command again to continue"
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


def run_convergence(args: argparse.Namespace) -> int:
    from largemeta.experiments import convergence, table
    from largemeta.report import plot_convergence

    cfg = _config(args)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    out = Path(args.out)
    with _resumable(args.out):
        result = convergence(
            cfg,
            algos,
            out,
            fractions=_floats(args.milestones, "--milestones"),
            settings=_settings(args),
            device=args.device,
            log=_log,
        )
    plot_convergence(result, out)
    _track(cfg, out, result)
    print_json(result) if args.json else print(table(result))
    return 0


def run_k_ablation(args: argparse.Namespace) -> int:
    from largemeta.experiments import k_ablation, table
    from largemeta.report import plot_k_ablation

    cfg = _config(args)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    out = Path(args.out)
    with _resumable(args.out):
        result = k_ablation(
            cfg, algos, _ints(args.ks, "--ks"), out, settings=_settings(args), device=args.device, log=_log
        )
    plot_k_ablation(result, out)
    _track(cfg, out, result)
    print_json(result) if args.json else print(table(result))
    return 0


def run_tune(args: argparse.Namespace) -> int:
    from largemeta.experiments import EvalSettings, table, tune

    cfg = _config(args)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    validation = EvalSettings(args.val_steps, args.val_seeds, args.eval_batch_size, args.val_train_size)
    with _resumable(args.out):
        result = tune(
            cfg,
            algos,
            _floats(args.betas, "--betas"),
            Path(args.out),
            validation=validation,
            test=_settings(args),
            device=args.device,
            log=_log,
        )
    _track(cfg, Path(args.out), result)
    print_json(result) if args.json else print(table(result))
    return 0


def run_pretrained(args: argparse.Namespace) -> int:
    import dataclasses

    from largemeta.experiments import pretrained, table
    from largemeta.report import plot_pretrained

    cfg = _config(args)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    if len(algos) != 1:
        raise UserError(f"experiment pretrained meta-trains one algorithm, got --algos {args.algos!r}")
    cfg = dataclasses.replace(cfg, algo=algos[0])
    out = Path(args.out)
    with _resumable(args.out):
        result = pretrained(
            cfg,
            args.init,
            _ints(args.sizes, "--sizes"),
            out,
            settings=_settings(args),
            device=args.device,
            log=_log,
        )
    plot_pretrained(result, out)
    _track(cfg, out, result)
    print_json(result) if args.json else print(table(result))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from largemeta.report import write_report

    if not Path(args.dir).is_dir():
        raise UserError(f"report folder {args.dir!r} does not exist")
    md, page = write_report(Path(args.dir))
    print(f"wrote {md} and {page}")
    return 0


# The demo: the offline suite's convergence experiment, sized for 2 CPU cores (≈ 8 minutes).
DEMO = {"steps": 3000, "width": 16, "batch_size": 16, "k": 100, "log_every": 50, "checkpoint_every": 750}
# Limited data (20 images per class) makes the held-out QuickDraw targets discriminate between
# initializations.
DEMO_EVAL = {
    "steps": 200,
    "seeds": 3,
    "batch_size": 64,
    "train_size": 700,
    "targets": ("quickdraw_t1", "quickdraw_t2", "quickdraw_t3"),
}
DEMO_ALGOS = ("cts", "reptile", "leap", "scratch")


def run_demo(args: argparse.Namespace) -> int:
    from largemeta.data.datasets import fetch_dataset
    from largemeta.data.tasks import load_suite
    from largemeta.experiments import EvalSettings, convergence, overall, table
    from largemeta.report import plot_convergence, write_report
    from largemeta.train.config import load_config

    started = time.perf_counter()
    out = Path(args.out)
    cfg = load_config("offline", {**DEMO, **({"steps": args.steps} if args.steps else {})})
    settings = EvalSettings(**DEMO_EVAL)
    with _resumable(args.out):
        for name in sorted(load_suite(cfg.suite).datasets()):
            _log(f"dataset {name}")
            fetch_dataset(name)
        result = convergence(
            cfg, DEMO_ALGOS, out, fractions=(0.25, 0.5, 1.0), settings=settings, log=_log, command="demo"
        )
    plot_convergence(result, out)
    _track(cfg, out, result)
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
                "report": str(page),
            }
        )
        return 0
    print(
        f"Meta-test accuracy (%, ± 95 % interval over {settings.seeds} seeds) on held-out QuickDraw classes "
        f"({settings.train_size} training images per target, {settings.steps} fine-tuning steps), against "
        "cumulative inner steps per meta-training task:"
    )
    print(table(result))
    print(f"report: {page}   final φ of each algorithm: {out}/<algo> (usable as --init)", end="")
    print(f"   ({seconds / 60:.1f} min)")
    return 0
