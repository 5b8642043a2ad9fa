"""Class subsets, task specs and suite TOML files."""

from __future__ import annotations

import pytest

from largemeta.data.tasks.suite import TaskSpec, list_suites, load_suite, resolve_classes
from largemeta.errors import UserError

NAMES = ["cat", "dog", "T-shirt/top", "3", "owl"]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("all", [0, 1, 2, 3, 4]),
        ("0-1,4", [0, 1, 4]),
        ("2", [2]),
        ("3", [3]),  # the name "3" is index 3 here anyway
        (("owl", "cat"), [4, 0]),  # order kept: labels are renumbered in this order
        (("T-shirt/top", 1), [2, 1]),  # a name with a dash is a name, not a range
    ],
)
def test_resolve_classes(spec, expected):
    assert resolve_classes(spec, NAMES).tolist() == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        (("cta",), r"unknown class 'cta' \(valid: indices 0-4 or names: cat, dog.*did you mean 'cat'"),
        ("3-9", r"unknown class '3-9' \(valid: indices 0-4"),
        ((7,), r"unknown class 7"),
        (("cat", 0), "listed twice: cat"),
        ("", "empty"),
    ],
)
def test_resolve_classes_errors(spec, message):
    with pytest.raises(UserError, match=message):
        resolve_classes(spec, NAMES, "task 't'")


def test_long_class_lists_are_cut_short():
    names = [f"c{i}" for i in range(345)]
    with pytest.raises(UserError) as err:
        resolve_classes(("zebra-ish",), names)
    assert "345 in all" in str(err.value) and len(str(err.value)) < 300


def test_builtin_suites():
    assert {"offline", "paper"} <= set(list_suites())
    offline = load_suite("offline")
    assert [t.dataset for t in offline.meta_train] == [
        "mnist",
        "fashion_mnist",
        "quickdraw",
        "quickdraw",
        "quickdraw",
    ]
    assert offline.datasets() == ["mnist", "fashion_mnist", "quickdraw", "digits"]
    qd = [
        resolve_classes(t.classes, [str(i) for i in range(345)])
        for t in offline.tasks
        if t.dataset == "quickdraw"
    ]
    flat = [int(c) for idx in qd for c in idx]
    assert len(flat) == len(set(flat)) == 345  # disjoint groups covering every QuickDraw class
    assert not any(t.flip for t in offline.tasks if t.dataset in ("mnist", "digits"))

    paper = load_suite("paper")
    assert [t.image_size for t in paper.meta_train] == [64, 64, 32, 84, 84, 84, 28, 32]
    assert [t.dataset for t in paper.meta_test] == ["cars", "quickdraw_full", "flowers102", "pets", "stl10"]
    assert all(t.channels == 3 for t in paper.tasks)
    assert [t.crop_padding for t in paper.meta_train] == [8, 8, 4, 8, 8, 8, 8, 4]


def test_user_suite_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "mine"\n[defaults]\nimage_size = 16\n\n'
        '[[meta_train]]\nname = "a"\ndataset = "mnist"\nclasses = [0, 1]\nflip = false\n\n'
        '[[meta_test]]\nname = "b"\ndataset = "digits"\n'
    )
    suite = load_suite(str(path))
    assert suite.meta_train[0] == TaskSpec("a", "mnist", (0, 1), image_size=16, flip=False)
    assert suite.meta_test[0].image_size == 16


@pytest.mark.parametrize(
    "body, message",
    [
        ('[[meta_train]]\nname = "a"\ndataset = "mnist"\nchanels = 1\n', r"unknown task key .*'chanels'"),
        ('[[meta_train]]\nname = "a"\ndataset = "mnist"\nchannels = 2\n', "channels must be 1 or 3"),
        (
            '[[meta_train]]\nname = "a"\ndataset = "mnist"\nimage_size = 0\n',
            "image_size must be an integer >= 1",
        ),
        (
            '[[meta_train]]\nname = "a"\ndataset = "mnist"\n[[meta_test]]\nname = "a"\ndataset = "mnist"\n',
            "unique",
        ),
        ('[[meta_train]]\nname = "a"\ndataset = "mnist"\neval_split = "val"\n', r"unknown eval_split"),
        ("meta_train = 3\n", "array of tables"),
        ('name = "x"\n', "at least one"),
        ("[[meta_train]\n", "not valid TOML"),
    ],
)
def test_bad_suite_files(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(UserError, match=message):
        load_suite(str(path))


def test_unknown_suite_name():
    with pytest.raises(UserError, match=r"unknown suite 'offlne' \(valid: offline, paper"):
        load_suite("offlne")
