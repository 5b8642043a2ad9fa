"""``largemeta train`` and ``largemeta export``."""

from __future__ import annotations

import argparse
from pathlib import Path

from largemeta.cli.common import check_device_flag, print_json
from largemeta.devices import HELP as DEVICE_HELP
from largemeta.errors import UserError

EXIT_CODES = """exit codes: 0 done; 2 bad input (one line on stderr, nothing saved before is changed);
3 another rank died or stopped responding; 4 a NaN or inf stopped the run (the last good checkpoint is kept);
75 stopped by SIGTERM or SIGINT after writing a checkpoint at the step it stopped (continue with --resume
RUN_DIR; a second signal stops at once, keeping the previous checkpoint)"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="meta-train over a suite's image tasks (CTS or any baseline)",
        description="Meta-train a body over a suite's meta-train tasks. Under torchrun: "
        "torchrun --nproc_per_node N --no-python largemeta train ... The run folder is locked while a "
        "process trains it; --resume continues from the checkpoint, whose config is the run's.",
        epilog=EXIT_CODES,
    )
    p.add_argument(
        "--config", help="a TOML config file, or a shipped one by name (offline, paper); flags override it"
    )
    p.add_argument("--out", help="run folder (new or empty) — required unless --resume")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR exactly where its checkpoint stopped (flags may change only "
        "steps, checkpoint_every, log_every, device, tensorboard, data_dir, data_placement, "
        "memory_budget_gb, stream_workers)",
    )
    p.add_argument("--algo", help="an algorithm of 'largemeta algorithms' (cts, reptile, leap, ...)")
    p.add_argument("--steps", type=int, help="cumulative inner steps per task")
    p.add_argument("--k", type=int, help="inner steps per trajectory")
    p.add_argument("--seed", type=int, help="one seed for the whole run")
    p.add_argument("--device", help=f"where to train: {DEVICE_HELP}; overrides the config's device")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key (repeatable; 'largemeta config keys' lists them, 'largemeta config show' "
        "prints the result)",
    )
    p.add_argument("--json", action="store_true", help="print the last metrics line as JSON")
    p.add_argument(
        "--allow-model-change",
        action="store_true",
        help="with --resume: continue although the body's code (its file or module) changed since the "
        "checkpoint; the change is recorded in the run (run.json, the checkpoint's identity)",
    )
    p.add_argument(
        "--allow-data-change",
        action="store_true",
        help="with --resume: continue although the suite's tasks or the data they read changed since the "
        "checkpoint; the change is recorded in the run (run.json, the checkpoint's identity: data_changes)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything a run would (config, run folder, data, model, device, trackers), print the "
        "resolved config and the plan, and exit without training or writing the run folder",
    )
    p.add_argument(
        "--measure",
        action="store_true",
        help="with --dry-run: time a short warm-up of every task's inner step on this device and estimate "
        "the hours the run takes on 1, 2, 4, 8 ... devices",
    )
    p.set_defaults(func=run_train, resumable=True)

    a = sub.add_parser("algorithms", help="the algorithm table: every --algo name and what it needs")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=run_algorithms)

    e = sub.add_parser("export", help="write a run's φ as a plain model state_dict (.safetensors)")
    e.add_argument("run_dir", help="a run folder (its latest checkpoint's φ is exported)")
    e.add_argument("--out", required=True, help="FILE.safetensors")
    e.set_defaults(func=run_export)


FLAG_KEYS = ("algo", "steps", "k", "seed", "device")


def overrides(args: argparse.Namespace, flags: tuple[str, ...] = FLAG_KEYS) -> dict:
    """Config values given on the command line: ``--set KEY=VALUE`` and the flags named in ``flags``; the
    same key given twice with different values is refused (one line)."""
    from largemeta.train.config import parse_override

    values: dict = {}
    given: dict = {}
    for key in flags:
        value = getattr(args, key, None)
        if value is not None:
            values[key], given[key] = value, f"--{key.replace('_', '-')} {value}"
    for text in args.set:
        name, value = parse_override(text)
        if name in values and values[name] != value:
            raise UserError(f"{given[name]} and --set {text.strip()} disagree; give {name} once")
        values[name], given[name] = value, f"--set {text.strip()}"
    return values


def run_train(args: argparse.Namespace) -> int:
    from largemeta.errors import Preempted, Stopped
    from largemeta.runs import checkpoint
    from largemeta.runs.checkpoint import has_checkpoint
    from largemeta.train.config import from_mapping, load_config
    from largemeta.train.paths import absolute, check_recorded
    from largemeta.train.trainer import Trainer

    check_device_flag(args)
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise UserError("--resume continues RUN_DIR in place; drop --out or make it the same folder")
    if not args.resume and not args.out:
        raise UserError("train needs --out RUN_DIR (a new folder) or --resume RUN_DIR")
    folder = Path(args.resume or args.out)
    if args.resume:
        # the checkpoint holds the run's config: flags may change only the resumable keys (the trainer checks)
        saved = checkpoint.read(folder).config
        base = load_config(args.config) if args.config else from_mapping(saved)
        cfg = from_mapping(absolute(overrides(args)), base)  # a path given now: absolute too
        check_recorded(cfg, folder)
    else:
        cfg = load_config(args.config, overrides(args))
    if args.allow_model_change and not args.resume:
        raise UserError("--allow-model-change goes with --resume (a new run records its model's code)")
    if args.measure and not args.dry_run:
        raise UserError("--measure goes with --dry-run (it estimates the run's hours without training)")
    if args.allow_data_change and not args.resume:
        raise UserError("--allow-data-change goes with --resume (a new run records the data it reads)")
    allow = {"allow_model_change": args.allow_model_change, "allow_data_change": args.allow_data_change}
    if args.dry_run:
        return _dry_run(cfg, folder, bool(args.resume), args.json, measure=args.measure, **allow)
    try:
        trainer = Trainer(cfg, folder, resume=bool(args.resume), **allow)
        try:
            last = trainer.run()
        finally:
            trainer.close()
    except Stopped as stop:  # a signal before the loop began, or a second one: nothing half-written is kept
        kept = (
            f"the checkpoint in {str(folder)!r} is intact; continue with: largemeta train --resume {folder}"
            if has_checkpoint(folder)
            else "nothing was trained; run the same command again"
        )
        raise Preempted(f"stopped by {stop.signal_name}; {kept}", signal_name=stop.signal_name) from None
    if trainer.rank == 0:
        if args.json:
            print_json(last)
        elif trainer.steps_run == 0:
            print(f"run {folder} is already at step {trainer.learner.step} of {cfg.steps}; nothing to do")
        else:
            loss = last.get("mean_loss")
            shown = f"{loss:.4f}" if isinstance(loss, (int, float)) else "not finite"
            what = f"{cfg.algo} for {cfg.steps} steps"
            if trainer.controller is not None:
                what += f" ({trainer.meta_updates} meta-updates of φ)"
            print(f"trained {what}; mean loss {shown}; run folder {folder}")
    return 0


def _dry_run(cfg, folder: Path, resume: bool, as_json: bool, *, measure: bool = False, **allow: bool) -> int:
    from largemeta.console import log
    from largemeta.train.budget import no_meta_update
    from largemeta.train.config_docs import to_toml
    from largemeta.train.dry_run import describe, plan

    p = plan(cfg, folder, resume=resume, measure=measure, **allow)
    warning = no_meta_update(cfg, cfg.steps, budget=f"--steps {cfg.steps}")
    if warning:
        log.warning(warning)
    if as_json:
        print_json({"config": cfg.to_dict(), "plan": p})
    else:
        print(to_toml(cfg) + describe(p), end="")
    return 0


def run_algorithms(args: argparse.Namespace) -> int:
    from largemeta.core.algorithms import ALGORITHMS

    rows = []
    for name in ALGORITHMS:
        a = ALGORITHMS.get(name)
        rows.append(
            {
                "name": name,
                "meta_gradient": a.meta_gradient or "joint training",
                "cts": a.cts,
                "query_split": a.uses_query,
                "cuda_graph": a.graphable,
                "drop_in": a.drop_in,
                "summary": a.summary,
            }
        )
    if args.json:
        print_json(rows)
        return 0
    yes = {True: "yes", False: "-"}
    print(
        f"{'algorithm':<20} {'meta-gradient':<16} {'CTS':<4} {'query':<6} {'graph':<6} {'drop-in':<8} summary"
    )
    for r in rows:
        flags = [yes[r[k]] for k in ("cts", "query_split", "cuda_graph", "drop_in")]
        print(
            f"{r['name']:<20} {r['meta_gradient']:<16} {flags[0]:<4} {flags[1]:<6} {flags[2]:<6} "
            f"{flags[3]:<8} {r['summary']}"
        )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from largemeta.train.export import export

    path = export(Path(args.run_dir), Path(args.out))
    print(f"wrote {path}")
    return 0
