"""The file formats by their format ids (docs/formats.md): a version-0.1 checkpoint is read as the same
entries as a sharded one, resumes and says which format it is; an export is told by its ``format``
metadata, by the writer and the reader alike; a claimed folder is given back by its context manager."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from largemeta.checkpoint import legacy, store
from largemeta.cli import main
from largemeta.errors import UserError
from largemeta.phi import FORMAT, is_export, load_weights
from largemeta.runs import checkpoint
from largemeta.runs.claim import accept_anything, claim

V0_1 = Path(__file__).parents[1] / "golden" / "run_v0_1"


def test_a_version_0_1_checkpoint_reads_as_entries():
    on_disk = checkpoint.read(V0_1)
    assert on_disk.format == legacy.FORMAT == "largemeta-checkpoint-v1"
    assert on_disk.step == 6 and not on_disk.pooled
    assert set(on_disk.entries) == {"shared", "task/0", "task/1"}
    assert on_disk.info["task_names"] == ["mnist", "quickdraw_a"]
    got = on_disk.load(["shared", "task/1"])
    assert set(got) == {"shared", "task/1"}
    assert {"params", "inner_state", "task"} <= set(got["task/1"])
    assert all(isinstance(v, torch.Tensor) for v in got["shared"]["phi"].values())
    with pytest.raises(UserError, match="has no entry 'task/2'"):
        on_disk.load(["task/2"])


@pytest.mark.network
def test_a_version_0_1_run_resumes_says_its_format_and_continues_in_the_sharded_one(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(V0_1, run)
    assert main(["train", "--resume", str(run), "--steps", "7", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "is a largemeta-checkpoint-v1 checkpoint" in err and store.FORMAT in err, err
    on_disk = checkpoint.read(run)
    assert on_disk.format == store.FORMAT == "largemeta-sharded-checkpoint-v2" and on_disk.step == 7
    assert json.loads((run / "checkpoint.json").read_text())["format"] == store.FORMAT
    assert not (run / "checkpoint.pt").exists()


def test_an_export_is_told_by_its_format_key(tmp_path):
    phi = {"w": torch.ones(2)}
    plain = tmp_path / "plain.safetensors"
    save_file(phi, plain, metadata={"config": json.dumps({"model": "convnet"})})  # no format: not an export
    assert not is_export(plain)
    with pytest.raises(UserError, match="has no largemeta metadata"):
        load_weights(plain)
    ours = tmp_path / "ours.safetensors"
    save_file(phi, ours, metadata={"format": FORMAT, "config": json.dumps({"model": "convnet"})})
    assert is_export(ours) and load_weights(ours).model == "convnet"


def _another_process_locks(folder: Path) -> bool:
    code = "import sys; from largemeta.files import lock_folder; lock_folder(sys.argv[1]).release()"
    return subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True).returncode == 0


def test_a_claim_is_released_on_leaving_and_abandoned_on_an_error(tmp_path):
    with claim(tmp_path / "kept", accept_anything) as held:
        (held.folder / "x").write_text("")
        assert not _another_process_locks(held.folder)  # held: a second writer is refused
    assert _another_process_locks(tmp_path / "kept") and (tmp_path / "kept" / "x").exists()
    with pytest.raises(RuntimeError, match="boom"), claim(tmp_path / "new", accept_anything):
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()  # created for nothing: removed again
