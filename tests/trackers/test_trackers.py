"""Trackers read back with their own clients: an MLflow store (sqlite) and W&B's offline run files hold the
resolved config as hyper-parameters and every metrics.jsonl field at its step, once, across a kill -9 and
--resume."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_runs import env, sets
from largemeta.trackers import flat_metrics, hyperparameters

mlflow = pytest.importorskip("mlflow")
wandb = pytest.importorskip("wandb")


def expected(lines: list[str]) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl lines as metric histories: name -> [(step, value)]."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in lines:
        record = json.loads(line)
        for k, v in flat_metrics(record).items():
            out.setdefault(k, []).append((record["step"], v))
    return out


def same_series(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    """The same steps, in order, each once, with the same values (float32 where a tracker stores them)."""
    return [s for s, _ in got] == [s for s, _ in want] and [v for _, v in got] == pytest.approx(
        [v for _, v in want], rel=1e-6
    )


def wandb_records(root: Path, run_id: str):
    """Every record of W&B's offline files of run ``run_id`` (its sessions in order): the LevelDB log format
    (32 KiB blocks of records: crc32, length, type) after a 7-byte W&B header, each a protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    files = sorted(root.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    for path in files:
        data, block, pos, pending = path.read_bytes(), 32768, 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # a block's tail too short for a header is padding
                pos += block - pos % block
                continue
            length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
            chunk = data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind == 0:
                break
            pending += chunk
            if kind in (1, 4):  # full, or last of several
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                pending = b""
                yield record
    assert files, f"no offline W&B files of run {run_id} under {root}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "how, trackers",
    [(signal.SIGTERM, "mlflow,wandb"), (signal.SIGKILL, "mlflow")],
    ids=["preempted", "killed"],
)
def test_mlflow_and_wandb_hold_the_config_and_every_metrics_line_once_across_a_stop_and_resume(
    tiny_suite, tiny_config, tmp_path, how, trackers
):
    """SIGTERM: the run checkpoints and closes its tracker runs. kill -9: lines logged after the last
    checkpoint are logged again on --resume, and not sent again (W&B's own service loses what it had not
    written when its process is killed, so W&B is tried with the preemption only)."""
    run = tmp_path / "run"
    store = tmp_path / "mlflow.db"
    environment = env(
        MLFLOW_TRACKING_URI=f"sqlite:///{store}",
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp_path),
        WANDB_SILENT="true",
    )
    cfg = tiny_config(tiny_suite, log_every=2, checkpoint_every=5, trackers=trackers)
    cmd = [sys.executable, "-m", "largemeta", "train", "--out", str(run), "--steps", "60", *sets(cfg)]
    proc = subprocess.Popen(cmd, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    state = run / "trackers.json"
    while time.time() < deadline and proc.poll() is None:
        sent = json.loads(state.read_text()) if state.exists() else {}
        if sent.get("mlflow", {}).get("step", 0) >= 8 and sent["mlflow"]["step"] % 5:  # past a checkpoint
            break
        time.sleep(0.02)
    proc.send_signal(how)
    err = proc.communicate()[1].decode()
    assert proc.returncode == (75 if how == signal.SIGTERM else -signal.SIGKILL), err
    sent = json.loads((run / "trackers.json").read_text())
    before = (run / "metrics.jsonl").read_text().splitlines()
    out = subprocess.run(
        [sys.executable, "-m", "largemeta", "train", "--resume", str(run)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    # The lines a tracker had before the kill it keeps (sent once); the lines after the checkpoint that it
    # had not had are sent after --resume: metrics.jsonl as written, each step once.
    after = (run / "metrics.jsonl").read_text().splitlines()
    last_sent = sent["mlflow"]["step"]
    assert last_sent > 0
    want = expected(
        [x for x in before if json.loads(x)["step"] <= last_sent]
        + [x for x in after if json.loads(x)["step"] > last_sent]
    )
    assert [s for s, _ in want["mean_loss"]] == list(range(2, 61, 2))
    config = json.loads((run / "config.json").read_text())
    params = {k: str(v) for k, v in hyperparameters(config).items()}
    state = json.loads((run / "trackers.json").read_text())
    assert state["mlflow"]["id"] == sent["mlflow"]["id"] and state["mlflow"]["step"] == 60

    client = mlflow.tracking.MlflowClient(f"sqlite:///{store}")
    found = client.get_run(state["mlflow"]["id"])
    assert found.data.params == params and found.info.status == "FINISHED"
    assert set(found.data.metrics) == set(want)
    for key, history in want.items():
        got = sorted((m.step, m.value) for m in client.get_metric_history(found.info.run_id, key))
        assert same_series(got, history), key  # each step once

    if "wandb" not in trackers:
        return
    run_id = state["wandb"]["id"]
    assert run_id == json.loads((run / "run.json").read_text())["run_id"]
    history: dict[str, list[tuple[int, float]]] = {}
    configs = []
    for record in wandb_records(tmp_path, run_id):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            for k, v in items.items():
                if not k.startswith("_"):
                    history.setdefault(k, []).append((items["_step"], v))
        elif kind in ("run", "config"):
            items = (record.run.config if kind == "run" else record.config).update
            configs.append({i.key: json.loads(i.value_json) for i in items if not i.key.startswith("_")})
    merged = {k: v for c in configs for k, v in c.items()}
    assert merged == hyperparameters(config)
    assert set(history) == set(want)
    for key, values in want.items():
        assert same_series(history[key], values), key


def test_tensorboard_true_is_the_tensorboard_tracker(tiny_suite, tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from largemeta.train.config import from_mapping, tracker_names

    assert tracker_names(from_mapping({"tensorboard": True, "trackers": ("tensorboard",)})) == (
        "tensorboard",
    )
    out = subprocess.run(
        [sys.executable, "-m", "largemeta", "train", "--out", str(tmp_path / "run"), "--steps", "8"]
        + sets(tiny_config(tiny_suite, tensorboard=True)),
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    want = expected((tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    assert set(acc.Tags()["scalars"]) == set(want)
    for key, values in want.items():
        assert same_series([(e.step, e.value) for e in acc.Scalars(key)], values), key


def test_a_missing_tracker_package_is_one_line_naming_the_extra(tiny_suite, tiny_config, tmp_path):
    """A tracker whose package cannot be imported: refused before anything is written."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'wandb':\n            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    environment = env()
    environment["PYTHONPATH"] = os.pathsep.join([str(blocker), environment["PYTHONPATH"]])
    out = subprocess.run(
        [sys.executable, "-m", "largemeta", "train", "--out", str(tmp_path / "run")]
        + sets(tiny_config(tiny_suite, trackers="wandb")),
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr == (
        "largemeta: error: tracker 'wandb' needs the wandb package: pip install 'largemeta[wandb]'\n"
    )
    assert not (tmp_path / "run").exists()


def test_an_unknown_tracker_is_refused(tmp_path):
    from largemeta.cli import main

    assert main(["config", "show", "--set", "trackers=mlflow,comet"]) == 2


def test_a_tracker_store_that_fails_is_one_line(tiny_suite, tiny_config, tmp_path):
    """An MLflow URI whose store cannot be opened: one line naming the tracker, exit 2."""
    (tmp_path / "file").write_text("not a folder")
    out = subprocess.run(
        [sys.executable, "-m", "largemeta", "train", "--out", str(tmp_path / "run")]
        + sets(tiny_config(tiny_suite, trackers="mlflow")),
        env=env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    last = out.stderr.splitlines()[-1]
    assert (
        last.startswith("largemeta: error: tracker 'mlflow' could not start its run: ")
        and "Traceback" not in out.stderr
    )
