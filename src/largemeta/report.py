"""Figures and reports read from results files only (pure functions of the JSON; testable without training).

``write_report(dir)`` collects every ``results.json`` under ``dir`` (convergence, k-ablation, evaluate) and
the synthetic figures, and writes ``report.md`` and a self-contained ``report.html`` (figures embedded as data
URIs). Results of an experiment stopped half-way are reported as far as they go. The folders written are
claimed meanwhile (:func:`largemeta.runs.claim.claim`); a ``report.md`` or ``report.html`` that this command
did not write is refused, never overwritten; a damaged ``results.json`` is a one-line error naming it.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import platform
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy  # noqa: E402
import torch  # noqa: E402

import largemeta  # noqa: E402
from largemeta.errors import UserError  # noqa: E402
from largemeta.experiments import overall, table  # noqa: E402
from largemeta.files import atomic_write_text  # noqa: E402
from largemeta.runs.claim import accept_anything, claim  # noqa: E402
from largemeta.runs.names import RESULTS  # noqa: E402
from largemeta.runs.results import read_results  # noqa: E402

MARK_MD = "# largemeta report"
MARK_HTML = "<title>largemeta report</title>"
"""How a report this command wrote begins (``report.md``) or what it holds (``report.html``)."""


def _accuracy_plot(
    series: dict[str, tuple[list[int], list[dict[str, Any]]]], xlabel: str, title: str, path: Path
) -> Path:
    """Accuracy (%) with 95 % intervals over seeds against a log-scaled x, one line per series."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, (all_xs, all_results) in series.items():
        done = [(x, r) for x, r in zip(all_xs, all_results, strict=True) if r is not None]
        if not done:
            continue
        xs = [x for x, _ in done]
        stats = [overall(r) for _, r in done]
        ax.errorbar(
            xs,
            [100 * s[0] for s in stats],
            yerr=[100 * s[1] for s in stats],
            marker="o",
            capsize=3,
            label=name,
            linestyle="--" if name == "scratch" else "-",
        )
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("meta-test accuracy (%)")
    ax.set_title(title)
    _legend(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _legend(ax) -> None:
    """The legend of what was drawn; an empty plot (an experiment stopped before its first result) says so
    instead of leaving the plotting library to warn about a legend with nothing in it."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no finished point yet", transform=ax.transAxes, ha="center", va="center")


def plot_convergence(result: dict[str, Any], out: Path) -> list[Path]:
    milestones = result["milestones"]
    series = {
        a: (milestones, [e["accuracy"].get(str(m)) for m in milestones])
        for a, e in result["algorithms"].items()
    }
    acc = _accuracy_plot(
        series,
        "cumulative inner steps per task",
        "Meta-test accuracy vs. inner steps (95 % interval over seeds)",
        out / "convergence_accuracy.png",
    )

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for algo, entry in result["algorithms"].items():
        pts = [(r["step"], r["mean_loss"]) for r in entry.get("loss", []) if r.get("mean_loss")]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=algo)
    ax.set_yscale("log")
    ax.set_xlabel("cumulative inner steps per task")
    ax.set_ylabel("meta-training loss (mean over tasks)")
    ax.set_title("Meta-training loss")
    _legend(ax)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    loss = out / "convergence_loss.png"
    fig.savefig(loss, dpi=110)
    plt.close(fig)
    return [acc, loss]


def plot_k_ablation(result: dict[str, Any], out: Path) -> list[Path]:
    ks = result["ks"]
    series = {a: (ks, [by_k.get(str(k)) for k in ks]) for a, by_k in result["algorithms"].items()}
    return [
        _accuracy_plot(
            series, "K (inner steps per trajectory)", "Meta-test accuracy vs. K", out / "k_ablation.png"
        )
    ]


def plot_pretrained(result: dict[str, Any], out: Path) -> list[Path]:
    sizes = result["sizes"]
    series = {n: (sizes, [by.get(str(k)) for k in sizes]) for n, by in result["algorithms"].items()}
    return [
        _accuracy_plot(
            series,
            "training images per target",
            f"Meta-training on top of {result['init']} vs. plain fine-tuning",
            out / "pretrained.png",
        )
    ]


def environment() -> dict[str, str]:
    return {
        "largemeta": largemeta.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or 'unknown'})",
    }


def _section(path: Path, directory: Path) -> tuple[str, str, list[Path], dict[str, Any] | None] | None:
    """(title, markdown, figures, config) of one results file (None: not one a report shows)."""
    result = read_results(path)
    kind = result.get("experiment", "evaluate")
    rel = path.parent.relative_to(directory)
    if kind == "convergence":
        figs = plot_convergence(result, path.parent)
        return (f"Convergence ({rel})", table(result), figs, result.get("config"))
    if kind == "k-ablation":
        figs = plot_k_ablation(result, path.parent)
        return (f"K ablation ({rel})", table(result), figs, result.get("config"))
    if kind == "tune":
        return (f"Fair tuning: each algorithm at its best β ({rel})", table(result), [], result.get("config"))
    if kind == "pretrained":
        figs = plot_pretrained(result, path.parent)
        return (f"Meta-training on a pretrained start ({rel})", table(result), figs, result.get("config"))
    if "tasks" in result:
        rows = ["| target | accuracy (%) | 95 % interval |", "|---|---|---|"]
        rows += [
            f"| {n} | {100 * t['mean_accuracy']:.2f} | ± {100 * t['ci95']:.2f} |"
            for n, t in result["tasks"].items()
        ]
        return (f"Evaluation of {result.get('init')} ({rel})", "\n".join(rows), [], None)
    return None


def _accept_report(folder: Path, names: list[str]) -> None:
    """The report's folder: anything, but a report.md or report.html this command did not write."""
    for name, mark in (("report.md", MARK_MD), ("report.html", MARK_HTML)):
        path = folder / name
        if name in names:
            try:
                ours = mark in path.read_text(errors="replace")[:4096]
            except OSError:
                ours = False
            if not ours:
                raise UserError(
                    f"{str(path)!r} exists and was not written by 'largemeta report'; move it away first"
                )


def write_report(directory: Path) -> tuple[Path, Path]:
    directory = Path(directory)
    md_path, html_path = directory / "report.md", directory / "report.html"
    with contextlib.ExitStack() as held:  # the report's folder and every results folder, while it is written
        held.enter_context(claim(directory, _accept_report, what="report folder", create=False))
        found = sorted(directory.rglob(RESULTS))
        for folder in dict.fromkeys(p.parent for p in found):
            if folder != directory:
                held.enter_context(claim(folder, accept_anything, what="results folder", create=False))
        return _write_report(directory, found, md_path, html_path)


def _write_report(directory: Path, found: list[Path], md_path: Path, html_path: Path) -> tuple[Path, Path]:
    sections: list[
        tuple[str, str, list[Path], dict[str, Any] | None]
    ] = []  # (title, markdown, figures, config)
    for path in found:
        try:
            section = _section(path, directory)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as err:
            raise UserError(
                f"{str(path)!r} is not a largemeta results file ({type(err).__name__}: {str(err)[:80]})"
            ) from None
        if section is not None:
            sections.append(section)
    synthetic = sorted(
        p for p in directory.rglob("*.png") if p.name.startswith(("flow_k", "compare_k", "shift_error"))
    )
    if synthetic:
        sections.append(("Synthetic benchmark", "", synthetic, None))
    if not sections:
        raise UserError(f"{str(directory)!r} holds no results.json or synthetic figures to report")
    env = environment()
    md = [MARK_MD, ""]
    page = [
        f"<!doctype html><html><head><meta charset='utf-8'>{MARK_HTML}",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .6em}"
        "img{max-width:100%}pre{background:#f4f4f4;padding:.6em;overflow:auto}</style></head><body>",
        "<h1>largemeta report</h1>",
    ]
    for title, text, figs, cfg in sections:
        md += [f"## {title}", "", text, ""]
        page += [f"<h2>{html.escape(title)}</h2>", _md_table_to_html(text)]
        for fig in figs:
            md.append(f"![{fig.stem}]({fig.relative_to(directory)})")
            data = base64.b64encode(fig.read_bytes()).decode()
            page.append(
                f"<figure><img alt='{html.escape(fig.stem)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(fig.stem)}</figcaption></figure>"
            )
        if cfg:
            text_cfg = json.dumps(cfg, indent=1)
            md += [
                "",
                "<details><summary>resolved config</summary>",
                "",
                "```json",
                text_cfg,
                "```",
                "</details>",
                "",
            ]
            page.append(
                f"<details><summary>resolved config</summary><pre>{html.escape(text_cfg)}</pre></details>"
            )
    md += ["## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()]
    page += ["<h2>Environment</h2><ul>"] + [
        f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in env.items()
    ]
    page.append("</ul></body></html>")
    atomic_write_text(md_path, "\n".join(md) + "\n")
    atomic_write_text(html_path, "\n".join(page) + "\n")
    return md_path, html_path


def _md_table_to_html(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    if not lines:
        return f"<p>{html.escape(text)}</p>" if text else ""
    rows = []
    for i, line in enumerate(lines):
        if set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        tag = "th" if i == 0 else "td"
        rows.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"
