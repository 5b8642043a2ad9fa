"""Folder listings for streaming: the files, order and split of ``load_folder`` without opening a file;
cached while the folder is unchanged."""

from __future__ import annotations

import os

import numpy as np
import pytest

from largemeta.data.sources.byo import load_folder
from largemeta.data.store import index as index_module
from largemeta.data.store.index import index_folder
from largemeta.errors import UserError


def write_tree(root, make_image):
    for c, cls in enumerate(["b_cls", "a_cls", "c_cls"]):
        for i in range(7):
            sub = "nested/deeper" if i % 3 == 0 else ("Upper" if i % 3 == 1 else "")
            make_image(root / cls / sub / f"{i:02d}.png", size=(6, 6), mode="L", value=30 * c + i)
    (root / "a_cls" / "notes.txt").write_text("not an image")
    make_image(root / "a_cls" / ".hidden.png", size=(6, 6), mode="L", value=1)
    (root / ".git").mkdir()


def test_same_files_order_and_split_as_the_decoding_reader(tmp_path, make_image):
    root = tmp_path / "folder"
    write_tree(root, make_image)
    ds = load_folder(root)
    idx = index_folder(root)
    assert idx.class_names == ds.class_names == ("a_cls", "b_cls", "c_cls")
    assert np.array_equal(idx.splits["train"].labels, ds.y_train)
    assert np.array_equal(idx.splits["test"].labels, ds.y_test)
    # the same images, in the same order: decode the listed files and compare with the arrays
    from PIL import Image

    for split, x in (("train", ds.x_train), ("test", ds.x_test)):
        listing = idx.splits[split]
        decoded = np.stack(
            [np.asarray(Image.open(root / p))[..., None] for p in listing.paths(np.arange(len(listing)))]
        )
        assert np.array_equal(decoded, x), split
    assert idx.splits["train"].path(0).startswith("a_cls/")


def test_train_test_folders_are_the_split(tmp_path, make_image):
    root = tmp_path / "split"
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("x", "y"):
            for i in range(n):
                make_image(root / split / cls / f"{i}.png", size=(4, 4), mode="L")
    idx = index_folder(root)
    assert idx.counts() == {"train": 6, "test": 4} and idx.splits["test"].path(0) == "test/x/0.png"
    assert "train/test split" in idx.notes


def test_the_listing_is_cached_until_a_folder_changes(tmp_path, make_image, monkeypatch):
    root = tmp_path / "folder"
    write_tree(root, make_image)
    cache = tmp_path / "cache"
    first = index_folder(root, cache)
    walks = []
    real = index_module._walk_folder
    monkeypatch.setattr(index_module, "_walk_folder", lambda r: walks.append(r) or real(r))
    again = index_folder(root, cache)
    assert walks == [] and again.splits["train"].blob == first.splits["train"].blob
    make_image(root / "b_cls" / "nested" / "deeper" / "new.png", size=(6, 6), mode="L")
    changed = index_folder(root, cache)
    assert len(walks) == 1 and len(changed.splits["train"]) + len(changed.splits["test"]) == 23


def test_a_damaged_cached_listing_is_walked_again(tmp_path, make_image):
    root = tmp_path / "folder"
    write_tree(root, make_image)
    cache = tmp_path / "cache"
    first = index_folder(root, cache)
    (stored,) = (cache / "indexes").iterdir()
    (stored / "train.paths").write_bytes(b"garbage")
    assert index_folder(root, cache).splits["train"].blob == first.splits["train"].blob


def test_bad_folders_are_one_line(tmp_path, make_image):
    with pytest.raises(UserError, match="not a folder"):
        index_folder(tmp_path / "missing")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="has no images"):
        index_folder(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    make_image(tmp_path / "flat" / "x.png")
    with pytest.raises(UserError, match="no class subfolders"):
        index_folder(tmp_path / "flat")


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_symlinked_files_count_and_symlinked_folders_are_not_entered(tmp_path, make_image):
    root = tmp_path / "folder"
    make_image(root / "a" / "0.png")
    make_image(tmp_path / "elsewhere" / "1.png")
    os.symlink(tmp_path / "elsewhere" / "1.png", root / "a" / "link.png")
    os.symlink(tmp_path / "elsewhere", root / "a" / "linked_dir")
    make_image(root / "b" / "0.png")
    idx = index_folder(root)
    listed = sorted(
        idx.splits["train"].paths(np.arange(len(idx.splits["train"])))
        + idx.splits["test"].paths(np.arange(len(idx.splits["test"])))
    )
    assert listed == ["a/0.png", "a/link.png", "b/0.png"]
    assert len(load_folder(root).y_train) + len(load_folder(root).y_test) == 3
