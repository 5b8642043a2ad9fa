"""``largemeta synthetic``: the paper's 2-D benchmark (meta-gradient flow, Reptile vs CTS, shift error)."""

from __future__ import annotations

import argparse
import time

from largemeta.cli.common import output_dir, positive_float, positive_int, print_json

# torch and the benchmark are imported by the handlers, so that ``largemeta --help`` starts without torch.
INNER_CHOICES = ("sgd", "sgdm", "adam")  # the paper's three inner optimizers of the comparison


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("synthetic", help="the paper's 2-D synthetic benchmark")
    cmds = group.add_subparsers(dest="synthetic_command", metavar="SUBCOMMAND")
    cmds.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--k", type=positive_int, required=True, help="inner steps per trajectory (K)")
        p.add_argument("--out", help="folder for the PNG figures (and results.json)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument("--env", help="environment .npz (default: the paper's constants, shipped)")
        p.add_argument("--inner-lr", type=positive_float, default=0.05, help="inner learning rate α (0.05)")
        p.add_argument("--meta-lr", type=positive_float, default=0.1, help="meta learning rate β (0.1)")

    flow = cmds.add_parser("flow", help="count meta-level local minima by iterating Reptile to fixed points")
    common(flow)
    flow.add_argument("--grid", type=positive_int, default=41, help="N for an N×N grid of starts (41)")
    flow.add_argument("--radius", type=positive_float, default=0.5, help="clustering radius for minima (0.5)")
    flow.add_argument("--max-iters", type=positive_int, default=2000, help="meta-updates per start at most")
    flow.set_defaults(func=run_flow)

    cmp = cmds.add_parser("compare", help="Reptile vs CTS from 9 starts at an equal inner-step budget")
    common(cmp)
    cmp.add_argument("--inner", choices=INNER_CHOICES, required=True)
    cmp.add_argument("--budget", type=positive_int, default=240, help="cumulative inner steps per task (240)")
    cmp.add_argument(
        "--algos",
        default="reptile,cts",
        help="comma list of algorithms whose meta-gradient is elementwise (reptile, cts, fomaml, ...)",
    )
    cmp.add_argument(
        "--shift-error",
        action="store_true",
        help="also measure ‖θ_shifted − U_k(φ)‖ along the first CTS trajectory of each start",
    )
    cmp.set_defaults(func=run_compare)

    demo = cmds.add_parser("demo", help="all 6 Reptile-vs-CTS cells and the flow at K = 5 and 100 (≈ 1 min)")
    demo.add_argument("--out", default="runs/synthetic", help="folder for the figures (runs/synthetic)")
    demo.add_argument("--json", action="store_true", help="print the results as JSON")
    demo.set_defaults(func=run_demo)


def run_flow(args: argparse.Namespace) -> int:

    from largemeta.core.inner import SGD
    from largemeta.synthetic.env import load_env
    from largemeta.synthetic.flow import CYCLE, DIVERGED, FIXED, UNSETTLED, cluster, grid_points, meta_flow

    env = load_env(args.env)
    out = output_dir(args.out)
    if args.grid < 2:
        from largemeta.errors import UserError

        raise UserError(f"--grid must be >= 2, got {args.grid}")
    inner = SGD(args.inner_lr, momentum=0.9)
    started = time.perf_counter()
    result = meta_flow(env, grid_points(args.grid), args.k, inner, args.meta_lr, max_iters=args.max_iters)
    minima, counts = cluster(result.ends[result.settled], args.radius)
    seconds = time.perf_counter() - started
    status = {
        name: int((result.status == code).sum())
        for name, code in (
            ("fixed_point", FIXED),
            ("cycle", CYCLE),
            ("diverged", DIVERGED),
            ("unsettled", UNSETTLED),
        )
    }
    report = {
        "k": args.k,
        "grid": args.grid,
        "minima": len(minima),
        "points": minima.tolist(),
        "basin_sizes": counts.tolist(),
        "starts": status,
        "seconds": round(seconds, 2),
    }
    if out is not None:
        from largemeta.synthetic.plots import plot_flow

        report["figure"] = str(plot_flow(out / f"flow_k{args.k}.png", env, result, minima, args.k, inner))
    if args.json:
        print_json(report)
    else:
        print(
            f"K = {args.k}: {len(minima)} meta-level local minima from {args.grid}×{args.grid} starts "
            f"({status['fixed_point']} fixed points, {status['cycle']} settled cycles, "
            f"{status['diverged']} diverged, {status['unsettled']} unsettled) in {seconds:.1f} s"
        )
        for (x, y), n in zip(minima.tolist(), counts.tolist(), strict=True):
            print(f"  ({x:7.3f}, {y:7.3f})  basin of {n} starts")
        if "figure" in report:
            print(f"figure: {report['figure']}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    import torch

    from largemeta.core.inner import SGD
    from largemeta.errors import choice_error
    from largemeta.synthetic.compare import PAPER_STARTS, SYNTHETIC_ALGORITHMS, compare, shift_errors
    from largemeta.synthetic.env import load_env

    env = load_env(args.env)
    algos = tuple(a.strip() for a in args.algos.split(",") if a.strip())
    for a in algos:
        if a not in SYNTHETIC_ALGORITHMS:
            raise choice_error("algorithm", a, SYNTHETIC_ALGORITHMS)
    out = output_dir(args.out)
    results = compare(
        env, args.k, args.inner, args.budget, algos=algos, inner_lr=args.inner_lr, meta_lr=args.meta_lr
    )
    report: dict = {"k": args.k, "inner": args.inner, "budget": args.budget, "starts": PAPER_STARTS}
    for name, res in results.items():
        report[name] = res.losses.tolist()
    if "reptile" in results and "cts" in results:
        rep, cts = results["reptile"].losses, results["cts"].losses
        report["cts_wins"] = int(((cts < rep) | (torch.isnan(rep) & ~torch.isnan(cts))).sum())
    shift = None
    if args.shift_error:
        shift = [shift_errors(env, s, args.k, args.inner, args.inner_lr, args.meta_lr) for s in PAPER_STARTS]
        report["shift_error"] = {
            "k": [r["k"] for r in shift[0]],
            "per_start": [[r["shift_error"] for r in rec] for rec in shift],
            "displacement": [[r["displacement"] for r in rec] for rec in shift],
        }
    if out is not None:
        from largemeta.synthetic.plots import plot_compare, plot_shift_error

        inner = SGD(args.inner_lr, momentum=0.9)
        report["figure"] = str(
            plot_compare(
                out / f"compare_k{args.k}_{args.inner}.png",
                env,
                {n: r.path for n, r in results.items()},
                args.k,
                inner,
            )
        )
        if shift is not None:
            report["shift_error_figure"] = str(
                plot_shift_error(out / f"shift_error_k{args.k}_{args.inner}.png", shift, args.k)
            )
    if args.json:
        print_json(report)
        return 0
    print(
        f"K = {args.k}, inner {args.inner}, budget {args.budget} inner steps; mean task loss after {args.k} "
        "Adam steps from the final φ (lower is better; nan = diverged)"
    )
    print("start          " + "".join(f"{n:>12}" for n in results))
    for i, s in enumerate(PAPER_STARTS):
        row = "".join(f"{results[n].losses[i].item():12.3f}" for n in results)
        print(f"({s[0]:5.1f},{s[1]:5.1f})  {row}")
    if "cts_wins" in report:
        print(f"CTS lower in {report['cts_wins']} of {len(PAPER_STARTS)} starts")
    if shift is not None:
        worst = max(r["shift_error"] for rec in shift for r in rec)
        print(f"shift error along the first trajectory: largest {worst:.4g} (per-k values with --json)")
    for key in ("figure", "shift_error_figure"):
        if key in report:
            print(f"figure: {report[key]}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """The paper's synthetic comparison end to end: 6 cells K ∈ {80, 120} × inner ∈ {sgd, sgdm, adam} from the
    9 starts at 240 inner steps, the meta-gradient flow at K = 5 and K = 100; tables printed, figures
    written."""
    import torch

    from largemeta.core.inner import SGD
    from largemeta.synthetic.compare import compare
    from largemeta.synthetic.env import load_env
    from largemeta.synthetic.flow import cluster, grid_points, meta_flow
    from largemeta.synthetic.plots import plot_compare, plot_flow

    env = load_env()
    out = output_dir(args.out)
    started = time.perf_counter()
    cells = {}
    for k in (80, 120):
        for inner in ("sgd", "sgdm", "adam"):
            res = compare(env, k, inner)
            rep, cts = res["reptile"].losses, res["cts"].losses
            wins = int(((cts < rep) | (torch.isnan(rep) & ~torch.isnan(cts))).sum())
            cells[f"k{k}_{inner}"] = {"reptile": rep.tolist(), "cts": cts.tolist(), "cts_wins": wins}
            if inner == "sgdm":
                plot_compare(
                    out / f"compare_k{k}_{inner}.png",
                    env,
                    {n: r.path for n, r in res.items()},
                    k,
                    SGD(0.05, momentum=0.9),
                )
    flows = {}
    for k in (5, 100):
        inner = SGD(0.05, momentum=0.9)
        result = meta_flow(env, grid_points(41), k, inner)
        minima, _ = cluster(result.ends[result.settled], 0.5)
        flows[f"k{k}"] = {"minima": len(minima), "points": minima.tolist()}
        plot_flow(out / f"flow_k{k}.png", env, result, minima, k, inner)
    seconds = time.perf_counter() - started
    report = {"compare": cells, "flow": flows, "seconds": round(seconds, 1), "out": str(out)}
    if args.json:
        print_json(report)
        return 0
    print(
        "Reptile vs CTS, 9 starts, 240 inner steps each; mean task loss after K Adam steps (nan = diverged)"
    )
    print(f"{'cell':<12}{'Reptile mean':>14}{'CTS mean':>10}{'CTS wins':>10}")
    total = 0
    for name, cell in cells.items():
        rep = torch.tensor(cell["reptile"]).nanmean().item()
        cts = torch.tensor(cell["cts"]).nanmean().item()
        total += cell["cts_wins"]
        print(f"{name:<12}{rep:>14.2f}{cts:>10.2f}{cell['cts_wins']:>8}/9")
    print(f"CTS lower in {total} of {9 * len(cells)} runs")
    for name, flow in flows.items():
        print(f"meta-level local minima at K = {name[1:]}: {flow['minima']}")
    print(f"figures in {out}/ ({seconds:.0f} s)")
    return 0
