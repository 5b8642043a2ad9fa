"""The synthetic benchmark: environment, the vectorized flow against the engine, and the paper's claims."""

import json

import numpy as np
import pytest
import torch

from largemeta.cli import main
from largemeta.core import SGD, MetaLearner, Reptile, Schedule
from largemeta.errors import UserError
from largemeta.synthetic.env import SyntheticTask, load_env
from largemeta.synthetic.flow import reptile_update

ENV = load_env()


def test_environment_constants():
    assert ENV.num_tasks == 8
    assert ENV.coeff.tolist() == pytest.approx([0.73845121, 11.0, 0.9954126, 7.0])
    # centres on a circle of radius 7 around (5, 5)
    torch.testing.assert_close((ENV.targets - 5).norm(dim=1), torch.full((8,), 7.0, dtype=torch.float64))


def test_loss_by_hand_and_closed_form_gradient():
    # At x = c_t + 3·R(−a_t)·(3, 2) the rotated, scaled offset is (u, v) = (3, 2): a Himmelblau minimum.
    t = 2
    a = ENV.angles[t]
    c, s = torch.cos(a), torch.sin(a)
    d = 3 * torch.stack([c * 3 + s * 2, -s * 3 + c * 2])
    x = (ENV.targets[t] + d).view(1, 2)
    assert ENV.task_loss(t, x).item() == pytest.approx(0.0, abs=1e-20)
    # (u, v) = (0, 0): k₀·121 + k₂·49
    assert ENV.task_loss(t, ENV.targets[t].view(1, 2)).item() == pytest.approx(
        0.73845121 * 121 + 0.9954126 * 49
    )
    pts = torch.randn(8, 7, 2, dtype=torch.float64) * 6
    live = pts.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ENV.losses(live).sum(), live)
    loss, closed = ENV.losses_and_grads(pts)
    torch.testing.assert_close(closed, grad)
    torch.testing.assert_close(loss, ENV.losses(pts))


def test_vectorized_flow_step_equals_engine_loop():
    starts = torch.tensor([[-5.0, 15.0], [5.0, 5.0], [12.0, -3.0]], dtype=torch.float64)
    fast = reptile_update(ENV, starts, 20, SGD(0.05, momentum=0.9), 0.1)
    phi = {"x": starts.clone()}
    tasks = [SyntheticTask(ENV, t) for t in range(8)]
    learner = MetaLearner(
        phi,
        tasks,
        SGD(0.05, momentum=0.9),
        Reptile(),
        Schedule.plain(20),
        meta_lr=0.1,
        reset_inner_state=True,
    )
    learner.run(20)
    torch.testing.assert_close(fast, phi["x"], rtol=1e-10, atol=1e-10)


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_flow_k5_has_two_minima_where_the_paper_puts_them(capsys, tmp_path):
    out = run_json(capsys, "synthetic", "flow", "--k", "5", "--grid", "41", "--json", "--out", str(tmp_path))
    assert out["k"] == 5 and out["grid"] == 41 and out["minima"] == 2
    pts = sorted(out["points"])
    assert pts[0] == pytest.approx([1.5, 11.5], abs=0.25) and pts[1] == pytest.approx([9.0, -2.0], abs=0.25)
    assert (tmp_path / "flow_k5.png").stat().st_size > 10_000


@pytest.mark.slow
def test_flow_k100_has_many_minima(capsys):
    out = run_json(capsys, "synthetic", "flow", "--k", "100", "--json")
    assert out["minima"] >= 15


@pytest.mark.parametrize("k", [80, 120])
@pytest.mark.parametrize("inner", ["sgd", "sgdm", "adam"])
def test_cts_beats_reptile_at_equal_budget(capsys, k, inner):
    out = run_json(capsys, "synthetic", "compare", "--k", str(k), "--inner", inner, "--json")
    assert len(out["reptile"]) == len(out["cts"]) == 9  # diverged runs stay in as null
    assert out["cts_wins"] >= 7


@pytest.mark.slow
def test_compare_writes_figures_and_shift_error(capsys, tmp_path):
    out = run_json(
        capsys,
        "synthetic",
        "compare",
        "--k",
        "80",
        "--inner",
        "sgd",
        "--budget",
        "80",
        "--shift-error",
        "--json",
        "--out",
        str(tmp_path),
    )
    assert out["shift_error"]["k"] == list(range(1, 81))
    assert len(out["shift_error"]["per_start"]) == 9
    assert (tmp_path / "compare_k80_sgd.png").exists() and (tmp_path / "shift_error_k80_sgd.png").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["synthetic", "flow", "--k", "0"], "--k: '0' is out of range (valid: an integer >= 1)"),
        (
            ["synthetic", "compare", "--k", "80", "--inner", "sgd", "--inner-lr", "-0.1"],
            "--inner-lr: '-0.1' is out of range",
        ),
        (["synthetic", "compare", "--k", "80", "--inner", "rmsprop"], "invalid choice: 'rmsprop'"),
        (
            ["synthetic", "compare", "--k", "80", "--inner", "sgd", "--algos", "maml"],
            "unknown algorithm 'maml' (valid: cts, cts-fomaml, cts-fomaml-official, cts-reptile, fomaml, "
            "reptile)",
        ),
        (
            ["synthetic", "flow", "--k", "5", "--env", "/nonexistent/env.npz"],
            "'/nonexistent/env.npz' does not exist",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        code = main(argv)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_malformed_environment_files(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="is not a readable .npz"):
        load_env(garbage)
    partial = tmp_path / "partial.npz"
    np.savez(partial, coeff=np.ones(4))
    with pytest.raises(UserError, match="lacks angles, targets"):
        load_env(partial)
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, coeff=np.ones(3), angles=np.ones(8), targets=np.ones((8, 2)))
    with pytest.raises(UserError, match=r"coeff \(3,\)"):
        load_env(shapes)
    nan = tmp_path / "nan.npz"
    np.savez(nan, coeff=np.ones(4), angles=np.full(8, np.nan), targets=np.ones((8, 2)))
    with pytest.raises(UserError, match="angles must be finite"):
        load_env(nan)
