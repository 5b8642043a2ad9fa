"""A run's tracker runs are its own: their ids are in the run's identity, and ``trackers.json`` names the run
it belongs to, so a resume whose ``trackers.json`` is gone, unreadable or copied from another run continues
the run's own MLflow run (one warning line), never a second one or another run's; a tracker URI that cannot
work is refused before anything is written (``--dry-run`` too), an unreachable server within seconds; an
unwritable ``trackers.json`` is one warning and the run goes on.

Real MLflow stores (sqlite, in the test's folder), a real loopback port that refuses connections.
"""

import json
import shutil
import socket
import time

import pytest

from cli_runs import cli, sets

mlflow = pytest.importorskip("mlflow")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return mlflow.tracking.MlflowClient(uri)


def _start(run, steps, cfg, capsys):
    code, _, err = cli(capsys, "train", "--out", str(run), "--steps", str(steps), *sets(cfg))
    assert code == 0, err


def _steps(client, tracker_id):
    return sorted(m.step for m in client.get_metric_history(tracker_id, "mean_loss"))


def _runs(client):
    experiment = client.get_experiment_by_name("largemeta")
    return client.search_runs([experiment.experiment_id])


@pytest.mark.parametrize("damage", ["deleted", "unreadable"])
def test_a_lost_trackers_json_continues_the_runs_own_mlflow_run(
    store, tiny_suite, tiny_config, tmp_path, capsys, damage
):
    cfg = tiny_config(tiny_suite, trackers="mlflow", log_every=2, checkpoint_every=4)
    run = tmp_path / "R"
    _start(run, 4, cfg, capsys)
    tracker_id = json.loads((run / "run.json").read_text())["trackers"]["mlflow"]
    if damage == "deleted":
        (run / "trackers.json").unlink()
    else:
        (run / "trackers.json").write_text("{{{")
    code, _, err = cli(capsys, "train", "--resume", str(run), "--steps", "8")
    assert code == 0, err
    warned = [line for line in err.splitlines() if "trackers.json" in line]
    assert len(warned) == 1 and "continuing this run's own tracker runs (mlflow)" in warned[0], err
    assert [r.info.run_id for r in _runs(store)] == [tracker_id]  # no second run
    assert _steps(store, tracker_id) == [2, 4, 6, 8]


def test_a_trackers_json_copied_from_another_run_is_not_trusted(
    store, tiny_suite, tiny_config, tmp_path, capsys
):
    cfg = tiny_config(tiny_suite, trackers="mlflow", log_every=2, checkpoint_every=4)
    a, b = tmp_path / "A", tmp_path / "B"
    _start(a, 8, cfg, capsys)
    _start(b, 4, cfg, capsys)
    shutil.copy(a / "trackers.json", b / "trackers.json")
    code, _, err = cli(capsys, "train", "--resume", str(b), "--steps", "8")
    assert code == 0, err
    assert "is another run's" in err and "continuing this run's own tracker runs" in err, err
    a_id = json.loads((a / "run.json").read_text())["trackers"]["mlflow"]
    b_id = json.loads((b / "run.json").read_text())["trackers"]["mlflow"]
    assert a_id != b_id and len(_runs(store)) == 2
    assert _steps(store, a_id) == [2, 4, 6, 8] and _steps(store, b_id) == [2, 4, 6, 8]
    assert json.loads((b / "trackers.json").read_text())["mlflow"]["id"] == b_id


def test_an_unwritable_trackers_json_is_one_warning_and_the_run_goes_on(
    store, tiny_suite, tiny_config, tmp_path, capsys
):
    cfg = tiny_config(tiny_suite, trackers="mlflow", log_every=2, checkpoint_every=4)
    run = tmp_path / "R"
    _start(run, 4, cfg, capsys)
    (run / "trackers.json").unlink()
    (run / "trackers.json").mkdir()  # neither readable nor replaceable
    code, _, err = cli(capsys, "train", "--resume", str(run), "--steps", "8")
    assert code == 0 and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if "cannot write" in line]) == 1, err
    tracker_id = json.loads((run / "run.json").read_text())["trackers"]["mlflow"]
    assert _steps(store, tracker_id) == [2, 4, 6, 8]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_mlflow_server_is_refused_at_once_leaving_nothing(
    tiny_suite, tiny_config, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    run = tmp_path / "R"
    began = time.monotonic()
    code, _, err = cli(capsys, "train", "--out", str(run), *sets(tiny_config(tiny_suite, trackers="mlflow")))
    assert time.monotonic() - began < 60
    assert code == 2 and "cannot reach its server" in err and "Traceback" not in err, err
    assert "connecting to http://127.0.0.1" in err  # what it waited for
    assert not run.exists() or not list(run.iterdir())


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_tracking_uri_mlflow_cannot_use_is_refused_by_dry_run_too(
    tiny_suite, tiny_config, tmp_path, capsys, monkeypatch, dry_run
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://x")
    run = tmp_path / "R"
    flags = ["--dry-run"] if dry_run else []
    code, _, err = cli(
        capsys, "train", "--out", str(run), *flags, *sets(tiny_config(tiny_suite, trackers="mlflow"))
    )
    assert code == 2 and err.count("\n") == 1 and "tracking URI 'bogus://x' is not usable" in err, err
    assert not run.exists() or not list(run.iterdir())
