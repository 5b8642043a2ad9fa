"""Reports read from results files only (pure functions of the JSON; testable without training).

``write_report(dir)`` collects every ``results.json`` under ``dir`` (each experiment kind registered in
:data:`largemeta.experiments.EXPERIMENTS` gives its table and figures; evaluate's) and the synthetic
figures, and writes ``report.md`` and a self-contained ``report.html`` (figures embedded as data
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

import numpy
import torch

import largemeta
from largemeta.errors import UserError
from largemeta.experiments import EXPERIMENTS
from largemeta.files import atomic_write_text
from largemeta.runs.claim import accept_anything, claim
from largemeta.runs.names import RESULTS
from largemeta.runs.results import read_results

MARK_MD = "# largemeta report"
MARK_HTML = "<title>largemeta report</title>"
"""How a report this command wrote begins (``report.md``) or what it holds (``report.html``)."""


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
    if kind in EXPERIMENTS:
        spec = EXPERIMENTS.get(kind)
        figs = spec.plots(result, path.parent)
        return (f"{spec.title} ({rel})", spec.table(result), figs, result.get("config"))
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
