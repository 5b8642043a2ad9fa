"""largemeta train end to end on tiny real runs: every algorithm trains, logs, checkpoints, resumes,
exports."""

import json

import pytest
import torch

from checkpoint_edits import phi, read_all
from cli_runs import sets, train_here
from largemeta.cli import main
from largemeta.train.config import TRAIN_ALGORITHMS, from_mapping
from largemeta.train.trainer import Trainer


@pytest.mark.parametrize("algo", TRAIN_ALGORITHMS)
def test_every_algorithm_trains_and_logs(tiny_suite, tiny_config, tmp_path, algo):
    from largemeta.core.algorithms import ALGORITHMS
    from largemeta.models import create_model, split_state

    spec = ALGORITHMS.get(algo)
    extra = {"tasks": ("t0",)} if spec.single_task else {}
    cfg = tiny_config(tiny_suite, algo=algo, **extra)
    trainer, last = train_here(cfg, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [4, 8, 12]
    assert last["step"] == 12 and set(last["tasks"]) == ({"t0"} if spec.single_task else {"t0", "t1", "t2"})
    assert all(0 < t["loss"] < 10 and 0 <= t["accuracy"] <= 1 for t in last["tasks"].values())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["algo"] == algo
    state = read_all(tmp_path / "run")
    torch.manual_seed(cfg.get("seed", 0))
    phi0 = split_state(create_model("convnet", in_channels=1, width=cfg["width"]))[0]
    phi = state["shared"]["phi"]
    assert set(phi) == set(phi0) and any(not torch.equal(phi[k], phi0[k]) for k in phi)  # φ was trained
    heads = [t["params"]["head.weight"] for t in state["tasks"]]
    assert all(h.shape == (4, cfg["width"]) for h in heads)
    if spec.joint:
        assert lines[-1]["meta_grad_norm"] is None and lines[-1]["shift_norm"] is None  # no meta-gradient
        return
    assert last["meta_grad_norm"] > 0 and last["shift_norm"] > 0
    # step 12 is a restart (K = 4): every trajectory starts again exactly at φ, heads kept
    for t in state["tasks"]:
        assert all(torch.equal(t["params"][k], phi[k]) for k in phi)
    assert not torch.equal(heads[0], heads[1])  # task-private: never averaged into φ


def test_cts_lowers_the_training_loss(tiny_suite, tiny_config, tmp_path):
    _, last = train_here(tiny_config(tiny_suite, steps=40, log_every=10), tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["mean_loss"] < lines[0]["mean_loss"]
    assert lines[-1]["shift_norm"] > 0 and lines[-1]["meta_grad_norm"] > 0


@pytest.mark.parametrize(
    "algo, split",
    [("cts", 6), ("cts-leap", 6), ("cts-leap", 8), ("leap", 4), ("fomaml", 6), ("multitask", 6)],
)
def test_resume_is_bit_exact(tiny_suite, tiny_config, tmp_path, algo, split):
    # split 4 and 8 fall on restarts (K = 4): Leap's per-task state is empty there
    cfg = tiny_config(tiny_suite, algo=algo, steps=12)
    train_here(cfg, tmp_path / "straight")
    train_here({**cfg, "steps": split}, tmp_path / "split")  # stops at split (a checkpoint there)
    train_here(cfg, tmp_path / "split", resume=True)  # a longer budget is allowed
    a, b = phi(tmp_path / "straight"), phi(tmp_path / "split")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = read_all(tmp_path / "straight")["tasks"]
    sb = read_all(tmp_path / "split")["tasks"]
    for ta, tb in zip(sa, sb, strict=True):
        for k in ta["params"]:
            assert torch.equal(ta["params"][k], tb["params"][k])
        assert torch.equal(
            ta["task"]["sampler"]["train"]["generator"], tb["task"]["sampler"]["train"]["generator"]
        )


def test_resume_refuses_a_different_config(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite, steps=6)
    train_here(cfg, tmp_path / "run")
    code = main(["train", "--resume", str(tmp_path / "run"), "--set", "meta_lr=0.5", "--k", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "k: 4 -> 3" in err and "meta_lr: 0.1 -> 0.5" in err and err.count("\n") == 1


def test_new_run_refuses_an_existing_run_folder(tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite, steps=4)
    train_here(cfg, tmp_path / "run")
    before = (tmp_path / "run" / "checkpoint.json").read_bytes()
    with pytest.raises(Exception, match="already holds a run"):
        train_here(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint.json").read_bytes() == before


def test_cli_train_and_export(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite, steps=4)
    flags = sets(cfg)
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "4", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4
    out = tmp_path / "phi.safetensors"
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 0
    from safetensors.torch import load_file

    from largemeta.models import create_model

    state = load_file(out)
    model = create_model("convnet", in_channels=1, width=8)
    model.load_state_dict(state)  # a plain state_dict of the body (strict)
    weights = phi(tmp_path / "run")
    for k, v in weights.items():
        assert torch.equal(state[k], v)


def test_nan_loss_stops_with_task_and_step_and_keeps_the_checkpoint(
    tiny_suite, tiny_config, tmp_path, monkeypatch
):
    from largemeta.models.task import ImageTask

    cfg = tiny_config(tiny_suite, steps=12, checkpoint_every=4)
    original = ImageTask.train_loss
    calls = {"n": 0}

    def poisoned(self, params):
        loss = original(self, params)
        calls["n"] += 1
        return loss * float("nan") if (self.name == "t1" and calls["n"] > 3 * 6) else loss

    monkeypatch.setattr(ImageTask, "train_loss", poisoned)
    trainer = Trainer(from_mapping(cfg), tmp_path / "run", progress=False)
    with pytest.raises(Exception, match=r"non-finite loss nan in task 't1' at step 7"):
        trainer.run()
    state = read_all(tmp_path / "run")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["shared"]["phi"].values())


def test_train_from_an_exported_init(tiny_suite, tiny_config, tmp_path, capsys):
    train_here(tiny_config(tiny_suite, steps=4), tmp_path / "first")
    assert main(["export", str(tmp_path / "first"), "--out", str(tmp_path / "phi.safetensors")]) == 0
    cfg = tiny_config(tiny_suite, steps=1, init=str(tmp_path / "phi.safetensors"), algo="reptile", k=4)
    trainer = Trainer(from_mapping(cfg), tmp_path / "second", progress=False)
    start = phi(tmp_path / "first")
    for k, v in trainer.learner.phi.items():
        assert torch.equal(v, start[k])  # φ starts where the first run ended
    trainer.close()
    bad = tiny_config(tiny_suite, steps=1, init=str(tmp_path / "phi.safetensors"), width=16)
    with pytest.raises(
        Exception, match=r"tensor 'features.0.weight' has shape \(8, 1, 3, 3\), the model needs"
    ):
        Trainer(from_mapping(bad), tmp_path / "third", progress=False)


def test_tensorboard_events(tiny_suite, tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    train_here(tiny_config(tiny_suite, steps=4, tensorboard=True), tmp_path / "run")
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "mean_loss" in acc.Tags()["scalars"]  # every metrics.jsonl field, by its name
    assert [e.step for e in acc.Scalars("mean_loss")] == [4]


def test_shift_error_probe_in_training(tiny_suite, tiny_config, tmp_path):
    _, last = train_here(tiny_config(tiny_suite, steps=8, shift_error_every=1), tmp_path / "run")
    assert last["shift_error"]["k"] == 4 and last["shift_error"]["shift_error"] >= 0


class _NanGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a gradient fault with a finite loss."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("poison_step, caught_by", [(7, "loss"), (8, "parameter")])
def test_nan_gradient_never_reaches_a_checkpoint(
    tiny_suite, tiny_config, tmp_path, monkeypatch, poison_step, caught_by
):
    # poisoned at step 7: the next loss is non-finite; at step 8 (a checkpoint step): the save refuses
    from largemeta.models.task import ImageTask

    cfg = tiny_config(tiny_suite, steps=12, checkpoint_every=4)
    original = ImageTask.train_loss
    calls = {"n": 0}

    def poisoned(self, params):
        calls["n"] += 1
        loss = original(self, params)
        return (
            _NanGradient.apply(loss)
            if (self.name == "t2" and calls["n"] == 3 * (poison_step - 1) + 3)
            else loss
        )

    monkeypatch.setattr(ImageTask, "train_loss", poisoned)
    trainer = Trainer(from_mapping(cfg), tmp_path / "run", progress=False)
    # CTS averages the poisoned θ into φ and shifts every task: the first task's loss shows it at step 8
    with pytest.raises(Exception, match=rf"non-finite {caught_by} .* in task 't\d' at step 8"):
        trainer.run()
    state = read_all(tmp_path / "run")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for t in state["tasks"] for v in t["params"].values())
