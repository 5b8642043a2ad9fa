"""``largemeta demo``: the main job — the paper's synthetic Reptile-vs-CTS comparison, end to end.

Runs the 6 cells K ∈ {80, 120} × inner ∈ {sgd, sgdm, adam} from the paper's 9 starts at an equal budget of
240 inner steps, the meta-gradient flow at K = 5 and K = 100, prints the tables and writes the figures.
"""

from __future__ import annotations

import argparse
import time

import torch

from largemeta.cli.common import output_dir, print_json
from largemeta.core.inner import SGD
from largemeta.synthetic.compare import compare
from largemeta.synthetic.env import load_env
from largemeta.synthetic.flow import cluster, grid_points, meta_flow


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: Reptile vs CTS on the paper's synthetic benchmark")
    p.add_argument("--out", default="runs/demo", help="folder for figures and results (runs/demo)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
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
                plot_compare(out / f"compare_k{k}_{inner}.png", env, {n: r.path for n, r in res.items()}, k,
                             SGD(0.05, momentum=0.9))
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
    print("Reptile vs CTS, 9 starts, 240 inner steps each; mean task loss after K Adam steps (nan = diverged)")
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
