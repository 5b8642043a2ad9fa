"""The report answers at a glance: it leads with a verdict matrix per milestone (coloured in the HTML), then
the steps-to-reach sentences and the tuned βs; the best value of each column is bold; an interval over two
values is flagged wherever it is printed (and the footnote says why)."""

import json

import fake_results

from largemeta.experiments.glance import FOOTNOTE, verdict_matrices
from largemeta.report import write_report


def test_verdict_matrix_by_hand():
    comparisons = [
        {"a": "cts", "b": "reptile", "at": "10 steps", "mean_diff": 0.03, "ci95": [0.015, 0.044], "n": 9,
         "over": "3 targets × 3 fine-tuning seeds"},
        {"a": "cts", "b": "scratch", "at": "10 steps", "mean_diff": -0.01, "ci95": [-0.03, 0.01], "n": 2,
         "over": "3 targets × 3 fine-tuning seeds"},
    ]  # fmt: skip
    [(at, matrix)] = verdict_matrices({"comparisons": comparisons})
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in matrix.splitlines()[2:5]
    }
    assert at == "10 steps" and matrix.splitlines()[0] == "| A − B | cts | reptile | scratch |"
    assert rows["cts"] == ["·", "▲ +3.0 [+1.5, +4.4] higher", "○ -1.0 [-3.0, +1.0] no sig. difference†"]
    # the mirror cell: reptile − cts, the interval negated
    assert rows["reptile"][0] == "▼ -3.0 [-4.4, -1.5] lower" and rows["reptile"][2] == "—"
    assert rows["scratch"][0] == "○ +1.0 [-1.0, +3.0] no sig. difference†"


def test_the_report_leads_with_the_verdict(tmp_path):
    folder = fake_results.convergence(tmp_path / "conv", command="demo")
    result = json.loads((folder / "results.json").read_text())
    result["algorithms"]["reptile"]["beta"] = 1.0
    result["algorithms"]["cts"]["beta"] = 0.01
    result["tuning"] = {
        "reptile": {"steps": 5, "targets": ["mnist", "fashion"], "validation": {"0.1": 0.4, "1": 0.5},
                    "meta_updates": {"0.1": 1, "1": 1}, "best": "1"},
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(result))
    md_path, page_path = write_report(tmp_path)
    md, page = md_path.read_text(), page_path.read_text()
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    assert headings[:4] == [
        "### Verdict at 5 steps",
        "### Verdict at 10 steps",
        "### Meta-convergence: steps to reach",
        "### Tuned β",
    ]
    assert "| cts | · | ▲ +5.0 [+5.0, +5.0] higher |" in md.replace("| ▲ +1.0 [+1.0, +1.0] higher ", "")
    assert "<td class='higher'>▲" in page and "<td class='lower'>▼" in page
    # the fake results: reptile (24.1 %, 26.1 %) never reaches cts's 29.1 % (5 steps) within 10 steps;
    # leap (28.1 %, 30.1 %) reaches it half way from 5 to 10 steps
    assert "To reach cts's 29.1 % at 5 inner steps, reptile does not get there within the budget" in md
    assert "leap needs 8 steps: 1.50× cts's (95 % bootstrap interval of the ratio [1.50×, 1.50×]" in md
    assert "| reptile | 40.0 | **50.0** | 1 |" in md and "<strong>50.0</strong>" in page
    # the best of each column of the results table, bold; the per-target tables' too
    assert "| reptile | 1 (tuned) | 24.1 ± 1.3† | 26.1 ± 1.3† |" in md and "| t1 | **30.1 ±" in md
    # two fine-tuning seeds: every interval printed carries the flag, and the footnote explains it
    assert (
        "| cts | 0.01 | **29.1 ± 1.3†** |" in md
        and "| t1 | **28.1 ± 1.0†** |" in md
        and FOOTNOTE in md
        and "12.7 × the standard error" in page
    )


def test_evaluate_flags_an_interval_over_two_seeds(tiny_suite, capsys):
    from largemeta.cli import main

    base = ["evaluate", "--init", "scratch", "--model", "convnet", "--width", "8", "--channels", "1"]
    base += ["--suite", str(tiny_suite), "--steps", "2", "--batch-size", "8"]
    assert main([*base, "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "†" in out.splitlines()[1] and FOOTNOTE in out
    assert main([*base, "--seeds", "3"]) == 0
    assert "†" not in capsys.readouterr().out
