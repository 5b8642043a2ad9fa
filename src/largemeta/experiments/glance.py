"""What a report leads with, so that it answers at a glance: the verdict matrix of every point (A vs B:
difference, interval, higher / lower / no significant difference), the best value of a column marked, and an
interval over two values (Student t with 1 degree of freedom, 12.7 times the half-width of a normal interval)
flagged as uninformative wherever it is printed."""

from __future__ import annotations

from typing import Any

from largemeta.experiments.verdicts import finite

UNINFORMATIVE = "†"
"""The mark of an interval over two values."""
FOOTNOTE = (
    f"{UNINFORMATIVE} an interval over 2 values (Student t with 1 degree of freedom: 12.7 × the standard "
    "error): uninformative; run more seeds for one that says something."
)
HIGHER, LOWER, SAME = "▲", "▼", "○"
"""How a verdict cell begins: the row's algorithm significantly higher, lower, or no significant
difference (the HTML report colours them)."""


def uninformative(n: int) -> bool:
    """Whether a 95 % t-interval over ``n`` values is uninformative (n = 2: one degree of freedom)."""
    return n == 2


def flag(n: int) -> str:
    """The mark an interval over ``n`` values carries (empty unless uninformative)."""
    return UNINFORMATIVE if uninformative(n) else ""


def _points(value: float) -> str:
    text = f"{value:+.1f}"
    return text if round(value, 1) != 0 or value == 0 else f"{value:+.2f}"


def _cell(c: dict[str, Any], sign: int) -> str:
    """A verdict cell of the row's algorithm against the column's: the row minus the column."""
    if c["mean_diff"] is None:
        return "no pairs"
    if not finite(c["mean_diff"]):  # a results file holding NaN: no verdict
        return "not a number: no verdict"
    diff = sign * 100 * c["mean_diff"]
    if c["ci95"] is None:
        return f"{_points(diff)} (too few pairs)"
    if not all(finite(v) for v in c["ci95"]):
        return f"{_points(diff)}, interval not a number: no verdict"
    low, high = sorted(sign * 100 * v for v in c["ci95"])
    mark = HIGHER if low > 0 else LOWER if high < 0 else SAME
    word = "higher" if low > 0 else "lower" if high < 0 else "no sig. difference"
    return f"{mark} {_points(diff)} [{_points(low)}, {_points(high)}] {word}{flag(c['n'])}"


def verdict_matrices(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(point, Markdown matrix) for each point of the results' paired comparisons: row A, column B, the
    cell is A − B in accuracy points with its 95 % paired interval and what it supports."""
    found = result.get("comparisons")
    if found is None:  # an older results file: worked out from its results
        from largemeta.experiments.verdicts import comparisons

        found = comparisons(result)
    out = []
    for at in dict.fromkeys(c["at"] for c in found):
        here = [c for c in found if c["at"] == at]
        names = list(dict.fromkeys(n for c in here for n in (c["a"], c["b"])))
        lines = ["| A − B | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for a in names:
            cells = []
            for b in names:
                c = next((c for c in here if (c["a"], c["b"]) == (a, b)), None)
                mirror = next((c for c in here if (c["a"], c["b"]) == (b, a)), None)
                cells.append("·" if a == b else _cell(c, 1) if c else _cell(mirror, -1) if mirror else "—")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        overs = sorted({c.get("over", "") for c in here})
        out.append((at, "\n".join(lines) + "\n\nPairs over " + "; ".join(overs) + "."))
    return out


def mark_best(values: dict[str, float | None], cells: dict[str, str]) -> dict[str, str]:
    """``cells`` with the one of the highest value in bold (none when nothing is measured)."""
    measured = {k: v for k, v in values.items() if v is not None}
    if not measured:
        return cells
    best = max(measured.values())
    return {k: f"**{c}**" if values.get(k) == best else c for k, c in cells.items()}
