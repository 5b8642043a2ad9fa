"""Degenerate, extreme and damaged inputs — a decompression bomb, degenerate arrays, rates beyond float32, a
full disk, damaged results, safetensors and checkpoints, image sizes a body cannot take, deep TOML — through
the real command line in this process: each is one line on stderr with exit code 2 (or what the README
promises), no traceback, and nothing saved before is changed. (The table of corrupt files through
subprocesses: test_corrupt_inputs.py.)"""

import json
import os
import struct
import zlib

import numpy as np
import pytest

from checkpoint_edits import read_all, reseal_manifest
from cli_runs import sets, tree
from largemeta.cli import main


def refused(capsys, argv, needle):
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own refusals
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err


@pytest.fixture
def run(tiny_suite, tiny_config, tmp_path):
    from largemeta.train.config import from_mapping
    from largemeta.train.trainer import Trainer

    trainer = Trainer(from_mapping(tiny_config(tiny_suite, steps=2)), tmp_path / "run", progress=False)
    trainer.run()
    trainer.close()
    return tmp_path / "run"


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels (no image data: a bomb needs no payload)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_a_bad_image(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "photos"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (6, 6), color=40 * i).save(folder / cls / f"{i}.png")
    (folder / "a" / "bomb.png").write_bytes(png_header(20000, 20000))  # 400 M pixels
    refused(capsys, ["data", "info", str(folder)], "bomb.png: Image size (400000000 pixels) exceeds limit")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert main(["data", "info", str(folder), "--skip-bad-images", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_images"] == 1


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"x": np.zeros((0, 6, 6), np.uint8), "y": np.zeros(0, np.int64)}, "'x' holds no images"),
        ({"x": np.zeros((8, 0, 6), np.uint8), "y": np.arange(8) % 2}, "holds images of 0x6 px"),
    ],
    ids=["no images", "height 0"],
)
def test_degenerate_npz(tmp_path, capsys, arrays, needle):
    np.savez(tmp_path / "d.npz", **arrays)
    refused(capsys, ["data", "info", str(tmp_path / "d.npz")], needle)


@pytest.mark.parametrize("key", ["inner_lr", "meta_lr", "weight_decay", "imaml_lambda"])
@pytest.mark.parametrize("value", ["3.5e38", "1e300"])
def test_rates_beyond_float32_are_refused(tmp_path, capsys, key, value):
    refused(
        capsys, ["train", "--out", str(tmp_path / "r"), "--set", f"{key}={value}"], f"'{key}' out of range"
    )
    assert not (tmp_path / "r").exists()


def test_repeated_tasks_and_nan_betas_are_refused(tmp_path, capsys):
    refused(
        capsys,
        ["train", "--out", str(tmp_path / "r"), "--set", "tasks=mnist,mnist"],
        "'mnist' more than once",
    )
    refused(
        capsys,
        ["experiment", "tune", "--betas", "0.1,nan", "--out", str(tmp_path / "t")],
        "every value must be a finite number > 0",
    )
    assert not (tmp_path / "t").exists()


def test_a_full_disk_while_writing_metrics(run, tiny_suite, tiny_config, tmp_path, monkeypatch):
    import builtins

    from largemeta.errors import UserError
    from largemeta.train.config import from_mapping
    from largemeta.train.trainer import Trainer

    trainer = Trainer(from_mapping(tiny_config(tiny_suite, steps=8)), run, resume=True, progress=False)
    real_open = builtins.open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def opening(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        return Full(fh) if str(path).endswith("metrics.jsonl") and "a" in mode else fh

    monkeypatch.setattr(builtins, "open", opening)
    with pytest.raises(
        UserError, match=r"metrics.jsonl': No space left on device; stopped at step 4 — the last"
    ):
        trainer.run()
    trainer.close()
    assert read_all(run)["step"] == 2


@pytest.mark.parametrize(
    "text, needle",
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"experiment": "convergence", "milestones": 3}', "is not a largemeta results file"),
        ('{"tasks": {"t": 1}}', "is not a largemeta results file"),
    ],
    ids=["not JSON", "a list", "wrong layout", "wrong evaluate layout"],
)
def test_report_on_a_damaged_results_file(tmp_path, capsys, text, needle):
    (tmp_path / "results.json").write_text(text)
    refused(capsys, ["report", str(tmp_path)], needle)
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize(
    "config, needle",
    [
        ("{not json", "'config' metadata is not a JSON object"),
        ("[1, 2]", "'config' metadata is not a JSON object"),
    ],
)
def test_safetensors_with_bad_metadata(run, tiny_suite, tmp_path, capsys, config, needle):
    from safetensors.torch import save_file

    phi = read_all(run)["shared"]["phi"]
    save_file(
        {k: v.contiguous() for k, v in phi.items()},
        tmp_path / "w.safetensors",
        metadata={"format": "largemeta-phi", "config": config},
    )
    refused(
        capsys, ["evaluate", "--init", str(tmp_path / "w.safetensors"), "--suite", str(tiny_suite)], needle
    )


def test_safetensors_missing_its_first_convolution_names_it(run, tiny_suite, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "phi.safetensors")]) == 0
    from safetensors.torch import load_file, save_file

    tensors = load_file(tmp_path / "phi.safetensors")
    del tensors["features.0.weight"]
    meta = {"format": "largemeta-phi", "config": json.dumps({"model": "convnet", "width": 8})}
    save_file(tensors, tmp_path / "cut.safetensors", metadata=meta)
    argv = [
        "evaluate",
        "--init",
        str(tmp_path / "cut.safetensors"),
        "--suite",
        str(tiny_suite),
        "--steps",
        "1",
    ]
    refused(capsys, argv, "lacks tensor 'features.0.weight' of model convnet")


@pytest.mark.parametrize(
    "size, needle",
    [
        ("1", "'1' is out of range"),
        ("100000", "'100000' is out of range"),
        ("8", "cannot take 8x8 px images"),
    ],
)
def test_image_sizes_a_body_cannot_take(tiny_suite, capsys, size, needle):
    task = str(tiny_suite.parent / "task0.npz")
    argv = [
        "evaluate",
        "--init",
        "scratch",
        "--tasks",
        task,
        "--image-size",
        size,
        "--steps",
        "1",
        "--seeds",
        "1",
    ]
    refused(capsys, argv, needle)


def test_toml_nested_5000_deep(tmp_path, capsys):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    refused(capsys, ["train", "--config", str(deep), "--out", str(tmp_path / "r")], "nested too deeply")
    refused(capsys, ["data", "suite", str(deep)], "nested too deeply")


@pytest.mark.parametrize("missing", ["shared", "step", "config", "task_names"])
def test_a_checkpoint_with_a_valid_checksum_but_missing_keys(run, tiny_suite, tmp_path, capsys, missing):
    def drop(manifest):
        if missing == "shared":
            del manifest["entries"]["shared"]
        elif missing == "step":
            del manifest["step"]
        else:
            del manifest["info"][missing]

    reseal_manifest(run, drop)
    before = tree(run)
    refused(capsys, ["train", "--resume", str(run), "--steps", "4"], f"is incomplete: {missing}")
    refused(capsys, ["evaluate", "--init", str(run), "--suite", str(tiny_suite)], "is incomplete")
    refused(capsys, ["export", str(run), "--out", str(tmp_path / "phi.safetensors")], "is incomplete")
    assert tree(run) == before


def test_a_target_without_test_images(tmp_path, capsys):
    x = np.zeros((8, 16, 16), np.uint8)
    y = np.arange(8) % 2
    np.savez(tmp_path / "t.npz", x=x, y=y, x_test=x[:0], y_test=y[:0])
    argv = ["evaluate", "--init", "scratch", "--tasks", str(tmp_path / "t.npz"), "--image-size", "16"]
    refused(capsys, [*argv, "--steps", "1", "--seeds", "1"], "has no test images")


def test_resuming_a_finished_run_says_so(run, capsys):
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "already at step 2 of 2; nothing to do" in out and "nan" not in out


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_are_created_with_the_users_umask(tiny_suite, tiny_config, tmp_path, mask):
    old = os.umask(mask)
    try:
        cfg = tiny_config(tiny_suite, steps=2)
        assert main(["train", "--out", str(tmp_path / "run"), "--steps", "2", *sets(cfg)]) == 0
        assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "phi.safetensors")]) == 0
        ev = ["evaluate", "--init", "scratch", "--suite", str(tiny_suite), "--steps", "1", "--seeds", "1"]
        assert main([*ev, "--batch-size", "8", "--out", str(tmp_path / "ev")]) == 0
        assert main(["report", str(tmp_path / "ev")]) == 0
    finally:
        os.umask(old)
    written = [*(tmp_path / "run").rglob("*"), tmp_path / "phi.safetensors", *(tmp_path / "ev").rglob("*")]
    modes = {str(p): oct(p.stat().st_mode & 0o777) for p in written if p.is_file()}
    folders = {str(p): oct(p.stat().st_mode & 0o777) for p in written if p.is_dir()}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes  # the checkpoint's shards and manifest too
    assert set(folders.values()) <= {oct(0o777 & ~mask)}, folders
