"""Streamed and device placement agree on a folder of images only where every image is already square at the
task's size: streaming resizes each file straight to the task's size, the device path through the folder's
common size (documented in the README). So a run over a folder never switches placement on resume: that is
refused in one line, where it used to continue with other images.

Real folders of real PNG files, real runs.
"""

import random

import pytest
import torch
from PIL import Image

from checkpoint_edits import phi
from cli_runs import sets, tree
from largemeta.cli import main


def folder_config(tmp_path, width_px, height_px):
    root = tmp_path / f"pictures-{width_px}x{height_px}"
    rng = random.Random(0)
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(16):
            img = Image.new("L", (width_px, height_px), color=rng.randrange(60))
            img.paste(220, (3 * c, 2 * c, 3 * c + 6, 2 * c + 6))
            img.save(root / f"c{c}" / f"{i:03d}.png")
    suite = tmp_path / f"suite-{width_px}x{height_px}.toml"
    suite.write_text(
        f'name = "pictures"\n[defaults]\nimage_size = 16\nchannels = 1\ncrop_padding = 2\nflip = false\n'
        f'[[meta_train]]\nname = "a"\ndataset = "{root}"\n'
    )
    return {
        "suite": str(suite),
        "width": 4,
        "batch_size": 8,
        "k": 2,
        "log_every": 2,
        "checkpoint_every": 4,
        "device": "cpu",
        "eval_batches": 0,
        "data_dir": str(tmp_path / "cache"),
        "stream_workers": 1,
    }


@pytest.mark.parametrize("size, same", [((16, 16), True), ((24, 14), False)])
def test_placements_agree_on_a_folder_only_where_images_are_square_at_the_task_size(tmp_path, size, same):
    cfg = folder_config(tmp_path, *size)
    for placement in ("device", "stream"):
        run = tmp_path / placement
        args = ["train", "--out", str(run), "--steps", "4", *sets({**cfg, "data_placement": placement})]
        assert main(args) == 0
    a, b = phi(tmp_path / "device"), phi(tmp_path / "stream")
    assert all(torch.equal(a[k], b[k]) for k in a) == same


def test_a_run_over_a_folder_never_switches_placement_on_resume(tmp_path, capsys):
    cfg = folder_config(tmp_path, 24, 14)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "4", *sets({**cfg, "data_placement": "stream"})]) == 0
    before = tree(run, locks=False)
    capsys.readouterr()
    code = main(["train", "--resume", str(run), "--steps", "8", "--set", "data_placement=device"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "decodes differently" in err and "--set data_placement=stream" in err
    assert tree(run, locks=False) == before
    assert main(["train", "--resume", str(run), "--steps", "8"]) == 0  # auto keeps the run's own
