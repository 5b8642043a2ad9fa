"""The HTML report in a real browser: headless Chromium loads it, every plot decodes, the console stays clean.

Marked ``browser``; skipped where Debian's ``chromium`` is not installed (``apt-get install chromium``).
"""

import json
import shutil
import subprocess

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


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_report_renders_in_headless_chromium(tmp_path):
    fake_convergence(tmp_path / "exp")
    _, page = write_report(tmp_path / "exp")
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
    probe = json.loads(marker)
    assert probe["images"] == 2 and probe["loaded"] == 2 and probe["errors"] == []
    console = [line for line in out.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
