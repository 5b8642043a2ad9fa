"""Fault injection: kill -9 at random moments (checkpoint writes included), corrupt checkpoints (the sharded
format's manifest, metadata and data files; version 0.1's single file), failing disks.

Each case: a one-line error (no traceback), a non-zero exit, and no file saved before is changed.
"""

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from checkpoint_edits import phi, read_all
from cli_runs import env, sets
from largemeta.checkpoint import legacy
from largemeta.cli import main


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_gives_the_uninterrupted_phi(tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite, checkpoint_every=1, log_every=1)  # a checkpoint write on every step
    steps = "200"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "largemeta",
            "train",
            "--out",
            str(tmp_path / "straight"),
            "--steps",
            steps,
            *sets(cfg),
        ],
        env=env(),
        check=True,
        capture_output=True,
    )
    run = tmp_path / "crashy"
    rng = random.Random(0)
    args = [sys.executable, "-m", "largemeta", "train", "--steps", steps]
    first = True
    interrupted = 0
    for _ in range(5):
        cmd = args + (["--out", str(run), *sets(cfg)] if first else ["--resume", str(run)])
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not (run / "checkpoint.json").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        first = False
        state = read_all(run)  # always loadable (every file verified): never a torn checkpoint
        assert 1 <= state["step"] <= 200
        interrupted += state["step"] < 200
    out = subprocess.run(args + ["--resume", str(run)], env=env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = phi(tmp_path / "straight"), phi(run)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert interrupted >= 3  # the kills really landed mid-run


def _damage(path: Path, damage: str) -> None:
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "bitflip":
        for i in range(len(data) // 3, len(data) // 3 + 64):
            data[i] ^= 0xFF
    elif damage == "onebyte":
        data[len(data) // 2] ^= 0x01
    elif damage == "garbage":
        data = bytearray(b"\x80\x04not a checkpoint" * 10)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "where, damage",
    [
        *[("manifest", d) for d in ("truncate", "bitflip", "onebyte", "garbage", "empty")],
        *[("data", d) for d in ("truncate", "bitflip", "onebyte", "empty")],
        *[("metadata", d) for d in ("onebyte", "garbage")],
        ("legacy", "bitflip"),
    ],
)
def test_damaged_checkpoint_is_refused_in_one_line(tiny_suite, tiny_config, tmp_path, capsys, where, damage):
    from largemeta.train.config import from_mapping
    from largemeta.train.trainer import Trainer

    run = tmp_path / "run"
    if where == "legacy":  # a version-0.1 run folder (one checkpoint.pt file)
        import shutil

        shutil.copytree(Path(__file__).parents[1] / "golden" / "run_v0_1", run)
        target = run / "checkpoint.pt"
    else:
        trainer = Trainer(from_mapping(tiny_config(tiny_suite, steps=4)), run, progress=False)
        trainer.run()
        trainer.close()
        folder = run / "checkpoint-00000004"
        target = {
            "manifest": run / "checkpoint.json",
            "data": folder / "__0_0.distcp",
            "metadata": folder / ".metadata",
        }[where]
    _damage(target, damage)
    before = {p.relative_to(run): digest(p) for p in run.rglob("*") if p.is_file()}
    code = main(["train", "--resume", str(run), "--steps", "8"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "checkpoint" in err and "Traceback" not in err, err
    assert {p.relative_to(run): digest(p) for p in run.rglob("*") if p.is_file()} == before


def test_checkpoint_from_another_run_or_architecture(tiny_suite, tiny_config, tmp_path, capsys):
    from largemeta.train.config import from_mapping
    from largemeta.train.trainer import Trainer

    trainer = Trainer(from_mapping(tiny_config(tiny_suite, steps=4)), tmp_path / "run", progress=False)
    trainer.run()
    trainer.close()
    other = Trainer(
        from_mapping(tiny_config(tiny_suite, steps=4, width=16)), tmp_path / "other", progress=False
    )
    other.run()
    other.close()
    import hashlib
    import json
    import shutil

    def graft(info=None):
        """The width-16 checkpoint copied into the width-8 run folder (manifest re-sealed with ``info``)."""
        for old in (tmp_path / "run").glob("checkpoint-*"):
            shutil.rmtree(old)
        shutil.copytree(tmp_path / "other" / "checkpoint-00000004", tmp_path / "run" / "checkpoint-00000004")
        manifest = json.loads((tmp_path / "other" / "checkpoint.json").read_text())
        if info is not None:
            manifest["info"] = info
            body = {k: v for k, v in manifest.items() if k != "sha256"}
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            manifest["sha256"] = hashlib.sha256(canonical).hexdigest()
        (tmp_path / "run" / "checkpoint.json").write_text(json.dumps(manifest))

    own = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["info"]
    # copied into the width-8 run folder, the width-16 checkpoint is another run's: refused by its identity
    graft()
    before = digest(tmp_path / "run" / "checkpoint.json")
    code = main(["train", "--resume", str(tmp_path / "run"), "--steps", "8"])
    err = capsys.readouterr().err
    assert code == 2 and "is the checkpoint of run" in err and err.count("\n") == 1
    assert digest(tmp_path / "run" / "checkpoint.json") == before
    # grafted under the run's own config and identity (a valid checksum): its tensors still do not fit
    graft(info=own)
    before = digest(tmp_path / "run" / "checkpoint.json")
    code = main(["train", "--resume", str(tmp_path / "run"), "--steps", "8"])
    err = capsys.readouterr().err
    assert code == 2 and "has shape" in err and err.count("\n") == 1
    assert digest(tmp_path / "run" / "checkpoint.json") == before


def test_version_0_1_checkpoint_cannot_execute_code(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    import hashlib
    import io
    import pickle

    buffer = io.BytesIO()
    torch.save({"format": legacy.FORMAT, "x": Evil()}, buffer, pickle_module=pickle)
    payload = buffer.getvalue()  # a valid checksum: only weights_only loading stands in the way
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(payload + legacy.TRAILER + hashlib.sha256(payload).hexdigest().encode())
    with pytest.raises(Exception, match="corrupt or not a largemeta checkpoint"):
        legacy.load(bad)
    assert not (tmp_path / "pwned").exists()


def test_unwritable_run_folder(tiny_suite, tiny_config, tmp_path, capsys):
    if os.geteuid() == 0:
        # root ignores permission bits: make the run folder's parent a file instead
        (tmp_path / "blocker").write_text("")
        out = tmp_path / "blocker" / "run"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        out = ro / "run"
    cfg = tiny_config(tiny_suite, steps=4)
    code = main(["train", "--out", str(out), "--steps", "4", *sets(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write run folder" in err and err.count("\n") == 1


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tiny_suite, tiny_config, tmp_path, monkeypatch):
    from largemeta.errors import UserError
    from largemeta.train.config import from_mapping
    from largemeta.train.trainer import Trainer

    cfg = from_mapping(tiny_config(tiny_suite, steps=8, checkpoint_every=4))
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    original = os.fsync

    def failing_fsync(fd):
        if (tmp_path / "run" / ".checkpoint-00000008.tmp").exists():  # the second checkpoint's first file
            raise OSError(28, "No space left on device")
        return original(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(UserError, match="No space left on device.*the previous checkpoint is intact"):
        trainer.run()
    trainer.close()
    assert read_all(tmp_path / "run")["step"] == 4
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if "checkpoint" in p.name) == [
        "checkpoint-00000004",
        "checkpoint.json",
    ]
