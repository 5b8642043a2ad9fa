"""The sharded checkpoint format on its own (one process): round trip, atomic publish, integrity, and
loading without executing code. Multi-rank writing and resuming on other world sizes: tests/train."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from largemeta.checkpoint import entries as ce
from largemeta.checkpoint import store as sc
from largemeta.errors import UserError


def entries():
    torch.manual_seed(0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.randn(3))], lr=0.1, momentum=0.9)
    return {
        "shared": {
            "step": 7,
            "phi": {"w": torch.randn(4, 3), "b": torch.randn(5)[2:]},
            "outer": opt.state_dict(),
        },
        "task/0": {
            "params": {"x": torch.arange(6, dtype=torch.float64).view(2, 3)},
            "inner_state": {"step": 0, "momentum_buffer": None},
            "meta": {"prev": (torch.zeros(2), 1.5, {}), "nan": float("nan"), 3: "int key"},
            "empty": torch.empty(0, 4, dtype=torch.int32),
            "generator": torch.Generator().manual_seed(1).get_state(),
            "flag": True,
        },
        "task/10": [torch.ones(2, dtype=torch.bfloat16), "text", None],
    }


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_round_trip_keeps_structure_types_and_values(tmp_path):
    sc.save(tmp_path, 7, entries(), info={"config": {"algo": "cts"}})
    got = sc.load(tmp_path)
    want = entries()
    for key in want:
        assert same(want[key], got[key]), key
    assert isinstance(got["task/0"]["meta"]["prev"], tuple) and 3 in got["task/0"]["meta"]  # tuple, int key
    manifest = sc.read_manifest(tmp_path)
    assert manifest.step == 7 and manifest.info == {"config": {"algo": "cts"}}
    assert set(manifest.entries) == {"shared", "task/0", "task/10"}
    assert set(sc.load(tmp_path, ["task/10"])) == {"task/10"}  # only what is asked for


def test_a_new_checkpoint_replaces_the_old_one_and_leftovers_are_swept(tmp_path):
    sc.save(tmp_path, 1, {"a": torch.ones(1)})
    sc.save(tmp_path, 2, {"a": torch.full((1,), 2.0)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000002", "checkpoint.json"]
    # what a kill -9 leaves: a half-written temporary folder, a superseded folder not yet removed, and a
    # renamed folder whose manifest never came (complete: its copy of the manifest names it)
    manifest = (tmp_path / "checkpoint.json").read_bytes()
    shutil.copytree(tmp_path / "checkpoint-00000002", tmp_path.parent / "kept-2")
    sc.save(tmp_path, 4, {"a": torch.full((1,), 4.0)})
    shutil.copytree(tmp_path.parent / "kept-2", tmp_path / "checkpoint-00000002")
    shutil.copytree(tmp_path / "checkpoint-00000002", tmp_path / "checkpoint-00000001")
    (tmp_path / "checkpoint.json").write_bytes(manifest)
    (tmp_path / ".checkpoint-00000003.tmp").mkdir()
    assert sc.load(tmp_path)["a"].item() == 2.0  # the manifest still names step 2
    assert sorted(sc.sweep(tmp_path)) == [".checkpoint-00000003.tmp", "checkpoint-00000001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-00000002",
        "checkpoint-00000004",
        "checkpoint.json",
    ]
    assert [m.step for m in sc.complete_folders(tmp_path)] == [4, 2]  # the newer one is kept, to recover


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    sc.save(tmp_path, 1, {"a": torch.ones(1)})
    before = (tmp_path / "checkpoint.json").read_bytes()

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="No space left on device.*previous checkpoint is intact"):
        sc.save(tmp_path, 2, {"a": torch.zeros(1)})
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.json").read_bytes() == before
    assert sc.load(tmp_path)["a"].item() == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000001", "checkpoint.json"]


def _rewrite_manifest(root: Path, **changes) -> None:
    """What an attacker who can write the folder does: alter files, then make the manifest agree."""
    raw = json.loads((root / "checkpoint.json").read_text())
    folder = root / raw["folder"]
    for name in raw["files"]:
        data = (folder / name).read_bytes()
        raw["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    raw.update(changes)
    body = {k: v for k, v in raw.items() if k != "sha256"}
    raw["sha256"] = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    (root / "checkpoint.json").write_text(json.dumps(raw))


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_metadata_pickle_is_refused_without_running_it(tmp_path):
    sc.save(tmp_path, 1, {"a": torch.ones(1)})
    marker = tmp_path / "pwned"
    metadata = tmp_path / "checkpoint-00000001" / ".metadata"
    metadata.write_bytes(pickle.dumps(Evil(marker)))
    _rewrite_manifest(tmp_path)  # every checksum valid: only the allow-list unpickler stands in the way
    with pytest.raises(UserError, match="forbidden global posix.system"):
        sc.load(tmp_path)
    assert not marker.exists()
    # also hidden inside a genuine Metadata object
    sc.save(tmp_path, 2, {"a": torch.ones(1)})
    metadata = tmp_path / "checkpoint-00000002" / ".metadata"
    real = sc.parse_metadata(metadata.read_bytes())
    real.planner_data = {"x": Evil(marker)}
    metadata.write_bytes(pickle.dumps(real))
    _rewrite_manifest(tmp_path)
    with pytest.raises(UserError, match="forbidden global"):
        sc.load(tmp_path)
    assert not marker.exists()


def test_metadata_pointing_outside_the_folder_or_at_pickled_bytes_is_refused(tmp_path):
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata

    sc.save(tmp_path, 1, {"a": torch.ones(1)})
    metadata = tmp_path / "checkpoint-00000001" / ".metadata"
    real = sc.parse_metadata(metadata.read_bytes())
    for info in real.storage_data.values():
        info.relative_path = "../../etc/passwd"
    metadata.write_bytes(pickle.dumps(real))
    _rewrite_manifest(tmp_path)
    with pytest.raises(UserError, match="outside plain files of its folder"):
        sc.load(tmp_path)
    metadata.write_bytes(pickle.dumps(Metadata({"a/skeleton": BytesStorageMetadata()}, storage_data={})))
    _rewrite_manifest(tmp_path)
    with pytest.raises(UserError, match="non-tensor item"):
        sc.load(tmp_path)


def test_a_manifest_naming_a_folder_elsewhere_is_refused(tmp_path):
    sc.save(tmp_path, 1, {"a": torch.ones(1)})
    _rewrite_manifest(tmp_path, folder="../elsewhere")
    with pytest.raises(UserError, match="outside its run folder"):
        sc.load(tmp_path)


@pytest.mark.parametrize("target", ["checkpoint.json", ".metadata", "__0_0.distcp"])
def test_one_flipped_byte_anywhere_is_refused_in_one_line(tmp_path, target):
    sc.save(tmp_path, 1, {"a": torch.randn(100), "b": {"c": torch.randn(10)}})
    path = tmp_path / target if target.endswith(".json") else tmp_path / "checkpoint-00000001" / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt") as err:
        sc.load(tmp_path)
    assert "\n" not in str(err.value)


def test_bad_entry_names_and_values_are_programming_errors(tmp_path):
    with pytest.raises(ValueError, match="bad checkpoint entry name"):
        sc.save(tmp_path, 1, {"a//b": torch.ones(1)})
    with pytest.raises(TypeError, match="cannot store a set"):
        sc.save(tmp_path, 1, {"a": {1, 2}})
    assert not sc.exists(tmp_path)


def test_skeleton_decoding_refuses_anything_but_its_own_nodes():
    with pytest.raises(ValueError):
        ce.decode({"e": [[1], "system"]}, {})
    with pytest.raises(ValueError):
        ce.decode({"x": 1}, {})
    assert ce.decode(ce.encode({"k": (1, [2.5, None])}, []), {}) == {"k": (1, [2.5, None])}


def test_metadata_claiming_more_data_than_stored_allocates_nothing(tmp_path):
    sc.save(tmp_path, 1, {"a": [torch.ones(4), torch.ones(100_000)]})  # packed, and one of its own
    metadata = tmp_path / "checkpoint-00000001" / ".metadata"
    real = sc.parse_metadata(metadata.read_bytes())
    assert sorted(real.state_dict_metadata) == ["a/1", "a/pack-float32", "a/skeleton"]
    real.state_dict_metadata["a/1"].size = torch.Size([10**12])  # 4 TB, if it were allocated
    metadata.write_bytes(pickle.dumps(real))
    _rewrite_manifest(tmp_path)
    with pytest.raises(UserError, match="larger than the data stored"):
        sc.load(tmp_path)
