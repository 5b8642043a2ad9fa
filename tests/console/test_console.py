"""What a command prints while it works: a header, progress lines off a terminal, a bar on one, log.txt."""

import json
import re
import subprocess
import sys

import pytest

from cli_runs import command, env, sets
from largemeta import console

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


def test_off_a_terminal_train_prints_a_header_and_timestamped_progress_and_keeps_log_txt(
    tiny_suite, tiny_config, tmp_path
):
    run = tmp_path / "run"
    cfg = tiny_config(tiny_suite, log_every=10, checkpoint_every=30)
    out = command(["train", "--out", str(run), "--steps", "60", *sets(cfg)], check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert all(re.match(STAMP, line) for line in lines), lines  # every line timestamped, no bar
    assert "\r" not in out.stderr
    header = lines[0]
    for part in (f"train cts -> {run}", "device cpu", "tasks 3 (t0, t1, t2)", "K 4", "β 0.1", "steps 60"):
        assert part in header, (part, header)
    progress = [line for line in lines if re.search(r"step \d+/60", line)]
    assert [int(re.search(r"step (\d+)/60", p)[1]) for p in progress] == [10, 20, 30, 40, 50, 60]
    assert all("loss" in p and "step/s" in p for p in progress[:-1]) and "ETA" in progress[0]
    # the loss shown is the mean of the window, as in metrics.jsonl (one task mean per step)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    shown = [float(re.search(r"loss (\S+)", p)[1]) for p in progress]
    assert shown == pytest.approx([m["mean_loss"] for m in metrics], abs=1e-4)
    # stdout holds the result alone; log.txt what stderr showed
    assert out.stdout.startswith("trained cts for 60 steps") and out.stdout.count("\n") == 1
    assert (run / "log.txt").read_text().splitlines() == lines


@pytest.mark.slow
def test_resume_appends_to_log_txt_and_json_stdout_stays_clean(tiny_suite, tiny_config, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(tiny_suite, log_every=4, checkpoint_every=4)
    first = command(["train", "--out", str(run), "--steps", "8", *sets(cfg)], check=False)
    assert first.returncode == 0, first.stderr
    second = command(["train", "--resume", str(run), "--steps", "12", "--json"], check=False)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["step"] == 12  # nothing but the JSON line on stdout
    assert "from step 8" in second.stderr.splitlines()[0]
    log = (run / "log.txt").read_text().splitlines()
    assert log == first.stderr.splitlines() + second.stderr.splitlines()


@pytest.mark.slow
def test_quiet_prints_nothing_but_the_result_and_verbose_is_accepted(tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite)
    quiet = command(["train", "-q", "--out", str(tmp_path / "q"), "--steps", "4", *sets(cfg)], check=False)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "step 4/4" in (tmp_path / "q" / "log.txt").read_text()  # the file keeps it all
    loud = subprocess.run(
        [sys.executable, "-m", "largemeta", "-v", "train", "--out", str(tmp_path / "v"), "--steps", "4"]
        + sets(cfg),
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loud.returncode == 0 and "step 4/4" in loud.stderr
    # -v: each task's figures
    assert re.search(r"step 4: t0 loss \S+ accuracy \S+ held_out_loss \S+.*; t1 loss", loud.stderr)


def test_a_bad_value_is_still_one_line_and_exit_2(tmp_path):
    out = command(["train", "--out", str(tmp_path / "run"), "--set", "k=0"], check=False)
    assert out.returncode == 2
    assert out.stderr == "largemeta: error: config key 'k' out of range: 1 <= k <= 1000000000, got 0\n"


def test_progress_lines_come_at_least_once_a_minute(monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    with console.session(stream=sys.stderr):
        with console.Progress("step", 1000, every=500) as bar:
            for step in range(1, 5):
                clock[0] += 25.0  # 25 s a step: a line after 60 s, not at every step
                bar.update(step, loss=1.0)
    lines = capsys.readouterr().err.splitlines()
    assert [re.search(r"step (\d+)/1000", line)[1] for line in lines] == ["3"]
    assert "ETA 6h55m" in lines[0]  # 997 steps at 25 s: 24,925 s


def test_on_a_terminal_progress_is_a_bar_with_loss_and_eta(tmp_path):
    """Under a real pseudo-terminal: the tqdm bar shows the loss and an ETA; messages are not stamped."""
    pty = pytest.importorskip("pty")
    import os

    code = (
        "import time\n"
        "from largemeta import console\n"
        "with console.session():\n"
        "    console.header('train cts -> R', {'device': 'cpu'})\n"
        "    with console.Progress('step', 30, every=10) as bar:\n"
        "        for s in range(1, 31):\n"
        "            time.sleep(0.01); bar.update(s, loss=0.5)\n"
    )
    import fcntl
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child: a terminal 100 columns wide (a new pty has none)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.execve(sys.executable, [sys.executable, "-c", code], env())
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    screen = b"".join(chunks).decode(errors="replace")
    assert screen.startswith("train cts -> R | device cpu")
    assert re.search(r"step: +\d+%.*\d+/30 \[\d\d:\d\d<\d\d:\d\d, .*step/s, loss 0.5000\]", screen), screen
    assert not re.search(STAMP, screen)  # no timestamps on a terminal, and no plain progress lines
    assert "step 10/30" not in screen
