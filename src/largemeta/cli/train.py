"""``largemeta train`` and ``largemeta export``."""

from __future__ import annotations

import argparse
from pathlib import Path

from largemeta.cli.common import print_json
from largemeta.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="meta-train over a suite's image tasks (CTS or any baseline)",
        description="Meta-train a body over a suite's meta-train tasks. Under torchrun: "
        "torchrun --nproc_per_node N --no-python largemeta train ...",
    )
    p.add_argument(
        "--config", help="a TOML config file, or a shipped one by name (offline, paper); flags override it"
    )
    p.add_argument("--out", help="run folder (new) — required unless --resume")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    p.add_argument("--algo", help="an algorithm of 'largemeta algorithms' (cts, reptile, leap, ...)")
    p.add_argument("--steps", type=int, help="cumulative inner steps per task")
    p.add_argument("--k", type=int, help="inner steps per trajectory")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:N, auto")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any config key (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="print the last metrics line as JSON")
    p.set_defaults(func=run_train)

    a = sub.add_parser("algorithms", help="the algorithm table: every --algo name and what it needs")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=run_algorithms)

    e = sub.add_parser("export", help="write a run's φ as a plain model state_dict (.safetensors)")
    e.add_argument("run_dir")
    e.add_argument("--out", required=True, help="FILE.safetensors")
    e.set_defaults(func=run_export)


def overrides(args: argparse.Namespace) -> dict:
    from largemeta.train.config import parse_override

    values = {}
    for key in ("algo", "steps", "k", "seed", "device"):
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    for text in args.set:
        name, value = parse_override(text)
        values[name] = value
    return values


def run_train(args: argparse.Namespace) -> int:
    from largemeta.runs import read_config
    from largemeta.train.config import from_mapping, load_config
    from largemeta.train.trainer import Trainer

    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise UserError("--resume continues RUN_DIR in place; drop --out or make it the same folder")
    if not args.resume and not args.out:
        raise UserError("train needs --out RUN_DIR (a new folder) or --resume RUN_DIR")
    if args.resume:
        saved = read_config(Path(args.resume))
        base = load_config(args.config) if args.config else from_mapping(saved)
        cfg = from_mapping(overrides(args), base)
    else:
        cfg = load_config(args.config, overrides(args))
    trainer = Trainer(cfg, Path(args.resume or args.out), resume=bool(args.resume))
    try:
        last = trainer.run()
    finally:
        trainer.close()
    if trainer.rank == 0:
        if args.json:
            print_json(last)
        else:
            loss = last.get("mean_loss", float("nan"))
            folder = args.resume or args.out
            print(f"trained {cfg.algo} for {cfg.steps} steps; mean loss {loss:.4f}; run folder {folder}")
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
