"""The HTML report in a real browser: headless Chromium loads it, every plot decodes, the console stays clean
— for a report of every kind of results folder at once (each experiment, the demo, evaluate with and without
``--train-size``), whose rendered text carries each kind's verdicts, protocol and environment.

Marked ``browser``; skipped where Debian's ``chromium`` is not installed (``apt-get install chromium``).
"""

import json
import shutil
import subprocess

import fake_results
import pytest

from largemeta.report import write_report

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images); const ok = imgs.filter(i => i.complete && i.naturalWidth >
  0).length; document.body.setAttribute('data-probe', JSON.stringify({images: imgs.length, loaded: ok, errors:
  window.__errors}));
});
</script>"""


def fake_convergence(folder):
    task = {"mean_accuracy": 0.4, "ci95": 0.02, "per_seed": [0.39, 0.41], "curve": {"10": 0.4}}
    acc = {"init": "x", "steps": 10, "seeds": 2, "tasks": {"t": task}, "mean_accuracy": 0.4}
    result = {
        "experiment": "convergence",
        "milestones": [5, 10],
        "config": {"algo": "cts"},
        "algorithms": {
            a: {
                "accuracy": {"5": acc, "10": acc},
                "loss": [{"step": 5, "mean_loss": 2.0}, {"step": 10, "mean_loss": 1.5}],
            }
            for a in ("cts", "reptile")
        },
    }
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(result))


def rendered(tmp_path, page):
    """The page's DOM after headless Chromium loaded it, its probe (images, loaded, errors) and console."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    marker = out.stdout.split('data-probe="', 1)[1].split('"', 1)[0].replace("&quot;", '"')
    console = [line for line in out.stderr.splitlines() if "CONSOLE" in line]
    return out.stdout, json.loads(marker), console


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_report_renders_in_headless_chromium(tmp_path):
    fake_convergence(tmp_path / "exp")
    _, page = write_report(tmp_path / "exp")
    _, probe, console = rendered(tmp_path, page)
    assert probe["images"] == 2 and probe["loaded"] == 2 and probe["errors"] == []
    assert not console, console


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_a_report_of_every_kind_renders_in_headless_chromium(tmp_path):
    for name, make in fake_results.KINDS.items():
        make(tmp_path / "all" / name)
    _, page = write_report(tmp_path / "all")
    dom, probe, console = rendered(tmp_path, page)
    # convergence 2 + demo 2 + k-ablation 1 + pretrained 1 figures (tune and evaluate have none)
    assert probe["images"] == 6 and probe["loaded"] == 6 and probe["errors"] == []
    assert not console, console
    titles = [h.split(">", 1)[1].split("</h2>", 1)[0] for h in dom.split("<h2")[1:]]
    assert titles == [
        "Convergence (convergence)",
        "Demo: Convergence (demo)",
        "Evaluation of x (evaluate)",
        "Evaluation of run (evaluate-sizes)",
        "K ablation (k-ablation)",
        "Meta-training on a pretrained start (pretrained)",
        "Fair tuning: each algorithm at its best β (tune)",
    ]
    assert dom.count("<h3>Environment</h3>") == 7 and dom.count("recorded-device-xyz") == 7
    for verdict in (
        "cts − scratch at 10 steps: +10.0 points",
        "cts − reptile at K = 2: +5.0 points",
        "cts − finetune at 8 images: +5.0 points",
        "reptile − scratch at each one's best β: +7.0 points",
    ):
        assert verdict in dom
