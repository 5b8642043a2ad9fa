"""Nothing is deleted that is not provably the run's own and superseded: the manifest is verified (its sha256,
then that it is this folder's run's) before any sweep; a complete checkpoint newer than the manifest is
continued, never deleted; a lost manifest is recovered from the newest complete checkpoint folder; a damaged
or foreign one is refused with a way forward that destroys nothing; a user's own folder named like a
checkpoint is left alone.

Real runs through the command line, real files; each refusal is one line, exit 2.
"""

import json
import shutil

import pytest
import torch

from checkpoint_edits import phi, read_all
from cli_runs import one_line, sets, tree
from largemeta.cli import main


def same_phi(a, b):
    pa, pb = phi(a), phi(b)
    return all(torch.equal(pa[k], pb[k]) for k in pa)


def train_code_err(capsys, out, steps, cfg=None, resume=False, warns=None):
    """Exit code and stderr of ``largemeta train``; ``warns``: the warning it must give (pytest turns
    warnings into errors; the command line prints them as one line)."""
    args = ["train", "--resume", str(out)] if resume else ["train", "--out", str(out), *sets(cfg)]
    if warns is None:
        return main([*args, "--steps", str(steps)]), capsys.readouterr().err
    with pytest.warns(UserWarning, match=warns) as caught:
        code = main([*args, "--steps", str(steps)])
    return code, capsys.readouterr().err + "".join(f"{w.message}\n" for w in caught)


def test_a_stale_manifest_never_costs_the_newer_checkpoint(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite, checkpoint_every=6)
    assert train_code_err(capsys, tmp_path / "straight", 18, cfg)[0] == 0
    run = tmp_path / "run"
    assert train_code_err(capsys, run, 6, cfg)[0] == 0
    stale = (run / "checkpoint.json").read_bytes()
    assert train_code_err(capsys, run, 12, resume=True)[0] == 0
    # an older checkpoint.json put back (from a backup, a sync tool, by hand); its folder is long gone
    (run / "checkpoint.json").write_bytes(stale)
    newer = tree(run / "checkpoint-00000012", locks=False)
    code, err = train_code_err(capsys, run, 18, resume=True, warns="newer complete checkpoint")
    assert code == 0, err
    assert "names step 6, but" in err and "continuing from step 12" in err, err
    assert "checkpoint-00000012" in err
    assert same_phi(run, tmp_path / "straight")  # nothing lost: 12 steps kept, 6 more trained
    assert newer  # it was complete


def test_a_stale_manifest_whose_folder_is_back_too_still_continues_the_newest(
    tiny_suite, tiny_config, tmp_path, capsys
):
    cfg = tiny_config(tiny_suite, checkpoint_every=6)
    run = tmp_path / "run"
    assert train_code_err(capsys, run, 6, cfg)[0] == 0
    stale = (run / "checkpoint.json").read_bytes()
    shutil.copytree(run / "checkpoint-00000006", tmp_path / "backup")
    assert train_code_err(capsys, run, 12, resume=True)[0] == 0
    (run / "checkpoint.json").write_bytes(stale)
    shutil.copytree(tmp_path / "backup", run / "checkpoint-00000006")
    code, err = train_code_err(
        capsys, run, 12, resume=True, warns="continuing from step 12"
    )  # already at 12 once the newer one is found
    assert code == 0, err
    assert read_all(run)["step"] == 12
    assert (run / "checkpoint-00000012").is_dir()


def test_a_foreign_manifest_is_refused_before_anything_is_deleted(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite, checkpoint_every=6)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert train_code_err(capsys, ours, 12, cfg)[0] == 0
    assert train_code_err(capsys, theirs, 6, {**cfg, "seed": 1})[0] == 0
    shutil.copy(theirs / "checkpoint.json", ours / "checkpoint.json")
    before = tree(ours, locks=False)
    code, err = train_code_err(capsys, ours, 18, resume=True)
    one_line(code, err, "is the checkpoint of run", "nothing was deleted", "checkpoint-00000012' (step 12)")
    assert "mv " in err and "--out" not in err
    assert tree(ours, locks=False) == before
    # the way forward it offers: move the foreign manifest aside, resume again
    (ours / "checkpoint.json").rename(tmp_path / "theirs-manifest.json")
    code, err = train_code_err(capsys, ours, 18, resume=True, warns="is missing: recovered")
    assert code == 0 and "is missing: recovered from" in err, err
    assert read_all(ours)["step"] == 18


def test_a_damaged_manifest_is_refused_and_names_what_can_be_recovered(
    tiny_suite, tiny_config, tmp_path, capsys
):
    cfg = tiny_config(tiny_suite, checkpoint_every=6)
    run = tmp_path / "run"
    assert train_code_err(capsys, run, 12, cfg)[0] == 0
    manifest = run / "checkpoint.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    before = tree(run, locks=False)
    code, err = train_code_err(capsys, run, 18, resume=True)
    one_line(code, err, "is corrupt", "nothing was deleted", "checkpoint-00000012' (step 12)", "mv ")
    assert tree(run, locks=False) == before


def test_a_missing_manifest_is_recovered_and_never_advised_away(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite, checkpoint_every=6)
    assert train_code_err(capsys, tmp_path / "straight", 18, cfg)[0] == 0
    run = tmp_path / "run"
    assert train_code_err(capsys, run, 12, cfg)[0] == 0
    (run / "checkpoint.json").unlink()
    before = tree(run, locks=False)
    # starting again over it would destroy the checkpoint: refused, nothing written
    code, err = train_code_err(capsys, run, 18, cfg)
    one_line(code, err, "already holds a run", f"--resume {run}")
    assert tree(run, locks=False) == before
    code, err = train_code_err(capsys, run, 18, resume=True, warns="is missing")
    assert code == 0, err
    assert f"'{run}/checkpoint.json' is missing: recovered from '{run}/checkpoint-00000012' (step 12)" in err
    assert same_phi(run, tmp_path / "straight")
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 18


def test_a_checkpoint_folder_without_any_manifest_is_kept_and_the_advice_destroys_nothing(
    tiny_suite, tiny_config, tmp_path, capsys
):
    cfg = tiny_config(tiny_suite, checkpoint_every=6)
    run = tmp_path / "run"
    assert train_code_err(capsys, run, 6, cfg)[0] == 0
    (run / "checkpoint.json").unlink()
    (run / "checkpoint-00000006" / "manifest.json").unlink()  # as a folder written before it had a copy
    before = tree(run, locks=False)
    code, err = train_code_err(capsys, run, 12, resume=True)
    one_line(code, err, "checkpoint-00000006", "nothing was deleted", "put the run's checkpoint.json back")
    assert "--out" not in err
    assert tree(run, locks=False) == before


def test_a_users_folder_named_like_a_checkpoint_is_never_swept(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite, checkpoint_every=6)
    run = tmp_path / "run"
    assert train_code_err(capsys, run, 6, cfg)[0] == 0
    for name in ("checkpoint-00000003", ".checkpoint-00000009.tmp", "checkpoint-00000010"):
        (run / name).mkdir()
        (run / name / "notes.txt").write_text("mine")
    assert train_code_err(capsys, run, 12, resume=True)[0] == 0
    for name in ("checkpoint-00000003", ".checkpoint-00000009.tmp", "checkpoint-00000010"):
        assert (run / name / "notes.txt").read_text() == "mine"
    assert read_all(run)["step"] == 12
    # one where the next checkpoint goes: that save is refused, the folder untouched, step 12 kept
    (run / "checkpoint-00000018").mkdir()
    (run / "checkpoint-00000018" / "notes.txt").write_text("mine")
    code, err = train_code_err(capsys, run, 18, resume=True)
    assert code == 2 and "a folder of that name holding other files is in the way" in err, err
    assert (run / "checkpoint-00000018" / "notes.txt").read_text() == "mine"
    assert read_all(run)["step"] == 12
