"""The batched meta-test (every seed, and the targets of one shape, fine-tuned in one vmapped run) against the
one-at-a-time loop, which stays the oracle: the same losses at every step, the same accuracies."""

import pytest
import torch

from largemeta.data.tasks.images import task_seed
from largemeta.data.tasks.loader import TaskLoader
from largemeta.data.tasks.suite import load_suite
from largemeta.metatest import Init, fine_tune, fine_tune_together, meta_test, scratch, target_images
from largemeta.models import create_model, split_state


def _suite(make_suite, tmp_path):
    """Three targets: two of one shape (4 classes), one of another (3 classes)."""
    suite = make_suite()
    text = suite.read_text()
    for name, task, classes in (("second", 1, "all"), ("narrow", 2, "0-2")):
        text += f'[[meta_test]]\nname = "{name}"\ndataset = "{tmp_path / f"task{task}.npz"}"\n'
        text += f'classes = "{classes}"\n' if classes != "all" else ""
    suite.write_text(text)
    return list(load_suite(suite).meta_test)


def _trained_like(seed=3) -> Init:
    """A φ that is not the random init (so scratch and φ members differ)."""
    torch.manual_seed(seed)
    phi, _ = split_state(create_model("convnet", in_channels=1, width=8))
    return Init("phi", "convnet", {"in_channels": 1, "width": 8}, {k: v * 1.1 for k, v in phi.items()})


def test_every_step_of_every_member_matches_the_loop(make_suite, tmp_path):
    """The training loss heard at every step of every (target, seed) and the accuracy curve: the batched run
    equals the loop to float tolerance, BatchNorm statistics and sub-sampled batches included."""
    specs = _suite(make_suite, tmp_path)
    loader = TaskLoader("cpu", "device", specs=specs, at_once=None)
    for init in (scratch("convnet", 1, 8), _trained_like()):
        members, alone_losses, alone_curves, opened = [], [], [], []
        for i, spec in enumerate(specs[:2]):  # the two targets of one shape
            for s in range(3):
                data, target = target_images(loader, spec, i, s, 40)
                heard: list[float] = []
                alone_curves.append(
                    fine_tune(
                        init,
                        target,
                        steps=7,
                        seed=task_seed(1000 + s, i),
                        batch_size=8,
                        on_step=lambda loss, heard=heard: heard.append(float(loss)),
                    )
                )
                alone_losses.append(heard)
                # fresh images, so the batched run draws its batches from the start of each stream
                data, target = target_images(loader, spec, i, s, 40)
                members.append((target, task_seed(1000 + s, i)))
                opened.append(data)
        together: list[float] = []
        curves = fine_tune_together(
            init,
            members,
            steps=7,
            batch_size=8,
            on_step=lambda loss, heard=together: heard.append(float(loss)),
        )
        # the batched run hears every member at each step: step-major
        by_member = [together[j :: len(members)] for j in range(len(members))]
        for alone, batched in zip(alone_losses, by_member, strict=True):
            assert torch.allclose(torch.tensor(batched), torch.tensor(alone), rtol=1e-5, atol=1e-6)
        assert curves == alone_curves
        assert len({tuple(h) for h in alone_losses}) == len(members)  # the members really differ


def test_meta_test_together_equals_one_at_a_time(make_suite, tmp_path):
    """The whole protocol, targets of two shapes, sub-sampled and not: the same result record."""
    specs = _suite(make_suite, tmp_path)
    for train_size in (None, 30):
        kw = dict(steps=6, seeds=2, batch_size=8, train_size=train_size)
        batched = meta_test(_trained_like(), specs, together=True, **kw)
        alone = meta_test(_trained_like(), specs, together=False, **kw)
        assert set(batched["tasks"]) == {"target", "second", "narrow"}
        for name, entry in alone["tasks"].items():
            got = batched["tasks"][name]
            assert got["per_seed"] == entry["per_seed"] and got["curve"] == entry["curve"], name
        assert batched["mean_accuracy"] == alone["mean_accuracy"]


def test_members_of_different_shapes_are_refused(make_suite, tmp_path):
    specs = _suite(make_suite, tmp_path)
    loader = TaskLoader("cpu", "device", specs=specs, at_once=None)
    a = loader.task_images(specs[0])
    b = loader.task_images(specs[2])
    with pytest.raises(ValueError, match="different shapes"):
        fine_tune_together(scratch("convnet", 1, 8), [(a, 0), (b, 1)], steps=1, batch_size=4)
