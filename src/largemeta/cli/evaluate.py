"""``largemeta evaluate``: the meta-test protocol on unseen targets."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from largemeta.cli.common import positive_int, print_json
from largemeta.devices import DEFAULT as DEVICE_DEFAULT
from largemeta.devices import HELP as DEVICE_HELP
from largemeta.errors import UserError

EXIT_CODES = """exit codes: 0 done; 2 bad input (one line on stderr); 130 stopped by SIGINT, 143 by SIGTERM
(128 + the signal, as for any command that cannot resume: nothing is written, results.json comes whole at the
end or not at all; run it again)"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="fine-tune an initialization on meta-test targets (the paper's protocol)",
        epilog=EXIT_CODES,
    )
    p.add_argument("--init", required=True, help="RUN_DIR, FILE.safetensors (largemeta export) or scratch")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--suite", help="evaluate on this suite's meta-test tasks")
    where.add_argument("--tasks", nargs="+", metavar="NAME_OR_PATH", help="dataset names or BYO paths")
    p.add_argument("--steps", type=positive_int, default=1000, help="fine-tuning steps N (1000)")
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds per target (3)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--train-size", help="comma list: sub-sample each target's training set to these sizes")
    p.add_argument(
        "--model", help="body for a scratch init (convnet, resnet20, resnet18); default: the init's"
    )
    p.add_argument("--width", type=positive_int, help="body width for --model")
    p.add_argument(
        "--image-size",
        type=image_size,
        default=28,
        help=f"image size of --tasks targets ({MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}; 28)",
    )
    p.add_argument(
        "--channels", type=int, choices=(1, 3), help="input channels (default: the init's, else 1)"
    )
    p.add_argument("--device", default=DEVICE_DEFAULT, help=f"where to fine-tune: {DEVICE_HELP}")
    p.add_argument("--data-dir", help="dataset cache folder")
    p.add_argument(
        "--data-placement",
        default="auto",
        help="auto, device or stream: a target's images on the device or read from disk as they are drawn "
        "(auto: device when one target fits --memory-budget-gb)",
    )
    p.add_argument(
        "--memory-budget-gb", type=float, default=0.0, help="for auto placement (0: half the free memory)"
    )
    p.add_argument(
        "--stream-workers", type=int, default=0, help="decoding processes when streaming (0: auto)"
    )
    p.add_argument(
        "--out", help="folder for results.json and log.txt (new or empty; locked while evaluating)"
    )
    p.add_argument(
        "--trackers",
        default="",
        metavar="LIST",
        help="log the results to these trackers too: comma list of tensorboard (needs --out), mlflow, wandb",
    )
    p.add_argument(
        "--json", action="store_true", help="print the results as JSON (and nothing else on stdout)"
    )
    p.set_defaults(func=run_evaluate)


MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 4, 1024


def image_size(text: str) -> int:
    value = positive_int(text)
    if not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range (valid: {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels)"
        )
    return value


def parse_sizes(text: str | None) -> list[int | None]:
    if not text:
        return [None]
    sizes = []
    for part in text.split(","):
        try:
            n = int(part)
        except ValueError:
            raise UserError(
                f"--train-size {part!r} is not an integer (valid: positive integers, comma separated)"
            ) from None
        if n < 1:
            raise UserError(f"--train-size {n} is out of range (valid: positive integers)")
        sizes.append(n)
    return sizes


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from largemeta import console, trackers
    from largemeta.data.tasks.suite import TaskSpec, load_suite
    from largemeta.devices import resolve_device
    from largemeta.files import atomic_write_text
    from largemeta.metatest import check_init, load_init
    from largemeta.provenance import environment
    from largemeta.runs.claim import accept_results, claim
    from largemeta.runs.names import RESULTS

    device = resolve_device(args.device, what="--device")  # before any work: a bad device is one line
    sizes = parse_sizes(args.train_size)
    tracked = [t.strip() for t in args.trackers.split(",") if t.strip()]
    trackers.check_names(tracked)
    if "tensorboard" in tracked and not args.out:
        raise UserError("--trackers tensorboard writes into the results folder: give --out")
    trackers.require(tracked)
    init = load_init(args.init, model=args.model, width=args.width, channels=args.channels or 1)
    channels = args.channels or init.in_channels
    if args.suite:
        specs = list(load_suite(args.suite).meta_test)
        if not specs:
            raise UserError(f"suite {args.suite!r} has no meta-test tasks")
    elif args.tasks:
        specs = [
            TaskSpec(
                name=Path(t).stem if ("/" in t or t.endswith(".npz")) else t,
                dataset=t,
                image_size=args.image_size,
                channels=channels,
                crop_padding=4,
                flip=False,
            )
            for t in args.tasks
        ]
    else:
        raise UserError("evaluate needs --suite SUITE or --tasks NAME_OR_PATH...")
    bad = [s.name for s in specs if s.channels != channels]
    if bad:
        raise UserError(f"targets {bad} have {specs[0].channels} channels, the init's model takes {channels}")
    check_init(init, specs)  # before the header: a bad --init is one line
    # claimed before the long evaluation: a folder holding anything is refused before anything is written
    with contextlib.ExitStack() as stack:  # released when done; on an error given back as found
        out = Path(args.out) if args.out else None
        if out is not None:
            stack.enter_context(claim(out, accept_results("evaluate")))
            stack.enter_context(console.log_file(out))
        console.header(
            f"evaluate {init.name} -> {args.out or 'stdout'}",
            {
                "device": device,
                "model": init.model,
                "targets": f"{len(specs)} ({', '.join(s.name for s in specs)})",
                "fine-tuning": f"{args.steps} steps x {args.seeds} seeds, batch {args.batch_size}",
                "train size": args.train_size,
                "trackers": ",".join(tracked),
            },
        )
        runs = _evaluate(args, init, specs, sizes, device)
        result = (
            runs[None]
            if sizes == [None]
            else {"init": init.name, "by_train_size": {str(n): r for n, r in runs.items()}}
        )
        if out is not None:
            recorded = {
                **result,
                "protocol": _protocol(args, specs, sizes),
                "environment": environment(device),
            }
            atomic_write_text(out / RESULTS, json.dumps(recorded, indent=2) + "\n")
        params = {"command": "evaluate", "init": init.name, "steps": args.steps, "seeds": args.seeds}
        params.update(batch_size=args.batch_size, train_size=args.train_size or "all", device=str(device))
        trackers.log_results(tracked, out, params, result)
    if args.json:
        print_json(result)
        return 0
    from largemeta.experiments.glance import FOOTNOTE, flag, uninformative

    for n, r in runs.items():
        label = f" (train size {n})" if n else ""
        print(f"init {init.name}{label}: {args.steps} fine-tuning steps, {args.seeds} seeds")
        for name, t in r["tasks"].items():
            shown = (
                f"± {100 * t['ci95']:.2f}{flag(len(t['per_seed']))}"
                if t["ci95"] is not None
                else "(one seed: no interval)"
            )
            print(f"  {name:<20} {100 * t['mean_accuracy']:6.2f} % {shown}")
        print(f"  {'mean':<20} {100 * r['mean_accuracy']:6.2f} %")
    if uninformative(args.seeds):
        print(FOOTNOTE)
    return 0


def _protocol(args: argparse.Namespace, specs, sizes: list[int | None]) -> dict:
    """The ``protocol`` record of evaluate's results file (``train_size``: the sizes, or None for all)."""
    from largemeta.experiments.scoring import EvalSettings

    settings = EvalSettings(args.steps, args.seeds, args.batch_size)
    return {**settings.protocol(specs), "train_size": None if sizes == [None] else sizes}


def _evaluate(args: argparse.Namespace, init, specs, sizes, device) -> dict:
    from largemeta import console
    from largemeta.metatest import meta_test

    return {
        n: meta_test(
            init,
            specs,
            steps=args.steps,
            seeds=args.seeds,
            batch_size=args.batch_size,
            train_size=n,
            device=device,
            data_dir=args.data_dir,
            data_placement=args.data_placement,
            memory_budget_gb=args.memory_budget_gb,
            stream_workers=args.stream_workers,
            log=console.notice,
        )
        for n in sizes
    }
