"""Reports read from results files only (pure functions of the JSON; testable without training).

``write_report(dir)`` collects every ``results.json`` under ``dir`` (each experiment kind registered in
:data:`largemeta.experiments.EXPERIMENTS` — the demo's among them — and evaluate's, with or without
``--train-size``) and the synthetic figures, and writes ``report.md`` and a self-contained ``report.html``
(figures embedded as data URIs). Each results file gets its table, one verdict per paired comparison of two
algorithms (:func:`largemeta.experiments.verdicts.verdicts`), per-target tables, the meta-update counts when
the file has them, its figures with captions, and the protocol and environment *the file records* (measured by
the run that wrote it; "not recorded" for older files). Results of an experiment stopped half-way are reported
as far as they go. The folders written are claimed meanwhile (:func:`largemeta.runs.claim.claim`); a
``report.md`` or ``report.html`` that this command did not write is refused, never overwritten; a damaged
``results.json`` is a one-line error naming it.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from largemeta.errors import UserError
from largemeta.experiments import EXPERIMENTS
from largemeta.experiments.glance import (
    FOOTNOTE,
    HIGHER,
    LOWER,
    SAME,
    UNINFORMATIVE,
    flag,
    mark_best,
    verdict_matrices,
)
from largemeta.experiments.reach import sentence, steps_to_reach
from largemeta.experiments.tables import overall
from largemeta.experiments.verdicts import verdicts
from largemeta.files import atomic_write_text
from largemeta.runs.claim import accept_anything, claim
from largemeta.runs.names import RESULTS
from largemeta.runs.results import read_results
from largemeta.stats import plus_minus

MARK_MD = "# largemeta report"
MARK_HTML = "<title>largemeta report</title>"
"""How a report this command wrote begins (``report.md``) or what it holds (``report.html``)."""

NOT_RECORDED = "not recorded (the results file predates this record)"


@dataclass
class Section:
    """One results file's part of the report: Markdown blocks (text or a sub-heading), figures with their
    captions, and the resolved config."""

    title: str
    blocks: list[tuple[str, str]] = field(default_factory=list)  # ("h3", heading) or ("md", markdown)
    figures: list[tuple[Path, str]] = field(default_factory=list)
    config: dict[str, Any] | None = None

    def add(self, heading: str, text: str) -> None:
        if text:
            self.blocks += [("h3", heading), ("md", text)]


def _pct(r: dict[str, Any]) -> str:
    width = r.get("ci95") if len(r.get("per_seed", (0, 0))) > 1 else None  # one seed: no interval
    return plus_minus(r["mean_accuracy"], width) + (flag(len(r["per_seed"])) if width is not None else "")


def per_target(point: dict[str, dict[str, Any] | None]) -> str:
    """A table of each target's accuracy (%, ± 95 % interval) for each algorithm measured at a point."""
    names = [n for n, r in point.items() if r is not None]
    if not names:
        return ""
    targets = list(dict.fromkeys(t for n in names for t in point[n]["tasks"]))
    lines = ["| target | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for t in targets:
        found = {n: point[n]["tasks"].get(t) for n in names}
        values = {n: r["mean_accuracy"] if r else None for n, r in found.items()}
        cells = mark_best(values, {n: _pct(r) if r else "—" for n, r in found.items()})
        lines.append(f"| {t} | " + " | ".join(cells[n] for n in names) + " |")
    means = {n: overall(point[n])[0] for n in names}
    shown = mark_best(means, {n: f"{100 * v:.1f}" for n, v in means.items()})
    lines.append("| mean | " + " | ".join(shown[n] for n in names) + " |")
    return "\n".join(lines)


def reach_text(result: dict[str, Any]) -> str:
    """The steps-to-reach sentences of a convergence result, one per baseline and milestone."""
    records = result.get("steps_to_reach")
    if records is None and result.get("experiment") == "convergence":  # an older file: from its results
        records = steps_to_reach(result)
    if not records:
        return ""
    budget = result["milestones"][-1]
    lines = [f"- {sentence(r, budget)}" for r in records]
    return (
        "How many cumulative inner steps each baseline needs to reach the reference's mean accuracy at a "
        "milestone, interpolated linearly between milestones (ratio: those steps over the milestone's):"
        "\n\n" + "\n".join(lines)
    )


def tuning_text(result: dict[str, Any]) -> str:
    """Each tuned algorithm's validation score at every β (the best in bold) and the β chosen."""
    tuning = result.get("tuning") or {}
    if not tuning:
        return ""
    betas = list(dict.fromkeys(b for t in tuning.values() for b in t["validation"]))
    rows = ["| algorithm | " + " | ".join(f"β = {b}" for b in betas) + " | best β |"]
    rows.append("|---" * (len(betas) + 2) + "|")
    for algo, t in tuning.items():
        cells = mark_best(
            {b: t["validation"].get(b) for b in betas},
            {b: f"{100 * t['validation'][b]:.1f}" if b in t["validation"] else "—" for b in betas},
        )
        rows.append(f"| {algo} | " + " | ".join(cells[b] for b in betas) + f" | {t.get('best', '—')} |")
    first = next(iter(tuning.values()))
    where = ", ".join(first.get("targets", [])) or "the meta-training tasks"
    return (
        f"Validation accuracy (%) on the meta-training tasks' held-out images ({where}), each β "
        f"meta-trained for {first.get('steps')} steps (seed of the config); the meta-test targets play no "
        "part in the choice.\n\n" + "\n".join(rows)
    )


def _meta_updates(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """Every ``meta_updates`` field of a results file, with where it is (request, config and the records
    of protocol and environment aside)."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if not path and key in ("request", "config", "protocol", "environment", "continued_in"):
                continue
            if key == "meta_updates":
                found.append((" › ".join(path) or "results", value))
            elif isinstance(value, dict):
                found += _meta_updates(value, (*path, str(key)))
    return found


def meta_updates_text(result: dict[str, Any]) -> str:
    found = _meta_updates(result)
    if not found:
        return ""
    rows = ["| algorithm | meta-updates of φ (at each milestone, K or β) |", "|---|---|"]
    for where, value in found:
        where = "" if where == "results" else where.removeprefix("algorithms › ")
        # {algo: {K or β: count}} or, at the top level, {algo: count}: a row per algorithm
        nested = isinstance(value, dict) and (not where or all(isinstance(v, dict) for v in value.values()))
        for name, counts in value.items() if nested else [("", value)]:
            label = " › ".join(x for x in (where, str(name)) if x) or "results"
            shown = ", ".join(f"{k}: {v}" for k, v in counts.items()) if isinstance(counts, dict) else counts
            rows.append(f"| {label} | {shown} |")
    return "\n".join(rows)


def _listing(record: Any) -> str:
    if not isinstance(record, dict) or not record:
        return NOT_RECORDED

    def shown(v: Any) -> str:
        if isinstance(v, list):
            return " ".join(v) if all(isinstance(x, str) for x in v) else "[" + ", ".join(map(str, v)) + "]"
        return "None" if v is None else str(v)

    return "\n".join(f"- {k}: {shown(v)}" for k, v in record.items())


def protocol_text(result: dict[str, Any]) -> str:
    if isinstance(result.get("protocol"), dict):
        return _listing(result["protocol"])
    ev = result.get("eval") or (result.get("request") or {}).get("eval")
    if isinstance(ev, dict):  # an older experiment: its request says how φ was scored
        return NOT_RECORDED + "; the request says:\n\n" + _listing(ev)
    return NOT_RECORDED


def environment_text(result: dict[str, Any]) -> str:
    text = _listing(result.get("environment"))
    for i, env in enumerate(result.get("continued_in") or [], 1):
        text += f"\n\nContinued ({i}) in:\n\n" + _listing(env)
    return text


def _experiment_section(result: dict[str, Any], folder: Path, rel: Path) -> Section:
    spec = EXPERIMENTS.get(result["experiment"])
    demo = (result.get("request") or {}).get("command") == "demo"
    title = f"{'Demo: ' if demo else ''}{spec.title}" + (f" ({rel})" if rel != Path(".") else "")
    section = Section(title, config=result.get("config"))
    for at, matrix in verdict_matrices(result):
        section.add(f"Verdict at {at}", matrix)
    section.add("Meta-convergence: steps to reach", reach_text(result))
    section.add("Tuned β", tuning_text(result))
    section.add("Results", spec.table(result))
    section.add("Paired comparisons", "\n".join(verdicts(result)))
    for at, point in spec.points(result):
        section.add(f"Per target, {at}", per_target(point))
    section.add("Meta-updates", meta_updates_text(result))
    for fig in spec.plots(result, folder):
        section.figures.append((fig, spec.caption(result, fig.name) or fig.stem.replace("_", " ")))
    section.add("Protocol", protocol_text(result))
    section.add("Environment", environment_text(result))
    return section


def _evaluate_section(result: dict[str, Any], rel: Path) -> Section:
    section = Section(f"Evaluation of {result.get('init')}" + (f" ({rel})" if rel != Path(".") else ""))
    if "by_train_size" in result:
        for n, r in result["by_train_size"].items():
            section.add(f"{n} training images per target", _evaluate_table(r))
    else:
        section.blocks.append(("md", _evaluate_table(result)))
    section.add("Protocol", protocol_text(result))
    section.add("Environment", environment_text(result))
    return section


def _evaluate_table(r: dict[str, Any]) -> str:
    rows = ["| target | accuracy (%) | 95 % interval over seeds |", "|---|---|---|"]
    rows += [
        f"| {n} | {100 * t['mean_accuracy']:.2f} | "
        + (
            f"± {100 * t['ci95']:.2f}{flag(len(t['per_seed']))}"
            if t.get("ci95") is not None
            else "none (one seed)"
        )
        + " |"
        for n, t in r["tasks"].items()
    ]
    rows.append(f"| mean | {100 * r['mean_accuracy']:.2f} | |")
    return "\n".join(rows)


def _section(path: Path, directory: Path) -> Section | None:
    """One results file's section (None: not one a report shows)."""
    result = read_results(path)
    kind = result.get("experiment", "evaluate")
    rel = path.parent.relative_to(directory)
    if kind in EXPERIMENTS:
        return _experiment_section(result, path.parent, rel)
    if "tasks" in result or "by_train_size" in result:
        return _evaluate_section(result, rel)
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


SYNTHETIC_CAPTIONS = {
    "flow_k": "The meta-gradient flow of the synthetic 2-D benchmark at this horizon K.",
    "compare_k": "Reptile and CTS trajectories of φ on the synthetic 2-D benchmark at this horizon K.",
    "shift_error": "How far CTS's shifted trajectories are from the ones a restart would have taken.",
}


def _write_report(directory: Path, found: list[Path], md_path: Path, html_path: Path) -> tuple[Path, Path]:
    sections: list[Section] = []
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
        figures = [
            (p, next(c for k, c in SYNTHETIC_CAPTIONS.items() if p.name.startswith(k)) + f" ({p.stem})")
            for p in synthetic
        ]
        sections.append(Section("Synthetic benchmark", figures=figures))
    if not sections:
        raise UserError(f"{str(directory)!r} holds no results.json or synthetic figures to report")
    md = [MARK_MD, ""]
    page = [
        f"<!doctype html><html><head><meta charset='utf-8'>{MARK_HTML}",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.2em .6em}"
        "img{max-width:100%}figcaption{font-size:.9em;color:#333}"
        "pre{background:#f4f4f4;padding:.6em;overflow:auto}"
        "td.higher{background:#d4f0d4}td.lower{background:#f6d0d0}td.same{background:#eeeeee}"
        "</style></head><body>",
        "<h1>largemeta report</h1>",
    ]
    for section in sections:
        md += [f"## {section.title}", ""]
        page.append(f"<h2>{html.escape(section.title)}</h2>")
        blocks = section.blocks
        # the figures go after the results, before protocol and environment
        split = next(
            (i for i, (kind, text) in enumerate(blocks) if kind == "h3" and text == "Protocol"), None
        )
        split = len(blocks) if split is None else split
        for kind, text in blocks[:split]:
            md, page = _block(kind, text, md, page)
        for fig, caption in section.figures:
            alt = fig.stem.replace("_", " ")
            md += [f"![{alt}]({fig.relative_to(directory).as_posix()})", "", f"*{caption}*", ""]
            data = base64.b64encode(fig.read_bytes()).decode()
            page.append(
                f"<figure><img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        for kind, text in blocks[split:]:
            md, page = _block(kind, text, md, page)
        if section.config:
            text_cfg = json.dumps(section.config, indent=1)
            md += [
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
    if any(UNINFORMATIVE in line for line in md):
        md += [FOOTNOTE, ""]
        page.append(f"<p><small>{html.escape(FOOTNOTE)}</small></p>")
    page.append("</body></html>")
    atomic_write_text(md_path, "\n".join(md) + "\n")
    atomic_write_text(html_path, "\n".join(page) + "\n")
    return md_path, html_path


def _block(kind: str, text: str, md: list[str], page: list[str]) -> tuple[list[str], list[str]]:
    if kind == "h3":
        return [*md, f"### {text}", ""], [*page, f"<h3>{html.escape(text)}</h3>"]
    return [*md, text, ""], [*page, markdown_to_html(text)]


def markdown_to_html(text: str) -> str:
    """The Markdown this module writes as HTML: paragraphs, ``- `` lists and ``|`` tables."""
    out = []
    for chunk in text.split("\n\n"):
        lines = [line for line in chunk.splitlines() if line.strip()]
        if not lines:
            continue
        i = 0
        while i < len(lines):
            if lines[i].startswith("|"):
                j = i
                while j < len(lines) and lines[j].startswith("|"):
                    j += 1
                out.append(_table(lines[i:j]))
            elif lines[i].startswith("- "):
                j = i
                while j < len(lines) and lines[j].startswith("- "):
                    j += 1
                out.append("<ul>" + "".join(f"<li>{html.escape(x[2:])}</li>" for x in lines[i:j]) + "</ul>")
            else:
                j = i
                while j < len(lines) and not lines[j].startswith(("|", "- ")):
                    j += 1
                out.append(f"<p>{html.escape(' '.join(lines[i:j]))}</p>")
            i = j
    return "\n".join(out)


def _table(lines: list[str]) -> str:
    rows = []
    for i, line in enumerate(lines):
        if set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        tag = "th" if i == 0 else "td"
        rows.append("<tr>" + "".join(_table_cell(tag, c) for c in cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


VERDICT_CLASSES = {HIGHER: "higher", LOWER: "lower", SAME: "same"}


def _table_cell(tag: str, text: str) -> str:
    """A table cell: ``**best**`` in bold, a verdict cell coloured by what it supports."""
    kind = next((c for mark, c in VERDICT_CLASSES.items() if text.startswith(mark)), None)
    attr = f" class='{kind}'" if kind and tag == "td" else ""
    if text.startswith("**") and text.endswith("**") and len(text) > 4:
        return f"<{tag}{attr}><strong>{html.escape(text[2:-2])}</strong></{tag}>"
    return f"<{tag}{attr}>{html.escape(text)}</{tag}>"
