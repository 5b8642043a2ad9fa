"""Meta-gradients and the CTS loop against numbers worked out by hand on small problems."""

import pytest
import torch

from largemeta.core import (
    ALGORITHMS,
    FOMAML,
    IMAML,
    SGD,
    Leap,
    MetaLearner,
    Reptile,
    Schedule,
    ShiftErrorProbe,
    conjugate_gradient,
)
from largemeta.errors import UserError

D = torch.float64


class Quadratic:
    """f(x) = ½ a (x − c)² summed over elements of params["x"]; the query loss is ``query`` if given."""

    def __init__(self, a, c=0.0, query=None):
        self.a, self.c, self.query = a, c, query

    def train_loss(self, params):
        return 0.5 * (self.a * (params["x"] - self.c) ** 2).sum()

    def query_loss(self, params):
        return self.query(params) if self.query else self.train_loss(params)


def phi_of(*values):
    return {"x": torch.tensor(values, dtype=D)}


def test_reptile_k1_is_joint_gradient_descent():
    # Tasks ½(x−0)² and ½·3(x−2)²; α = 0.1, β = 0.5, φ = 1.
    # K = 1: g = φ − θ₁ = α mean_t ∇f_t(φ) = 0.1·(1 + 3·(1−2))/2 = −0.1 → φ' = 1 + 0.05 = 1.05;
    # then ∇ = (1.05, 3·(−0.95)) → mean −0.9 → φ'' = 1.05 + 0.5·0.1·0.9 = 1.095.
    phi = phi_of(1.0)
    learner = MetaLearner(
        phi, [Quadratic(1.0, 0.0), Quadratic(3.0, 2.0)], SGD(0.1), Reptile(), Schedule.plain(1), meta_lr=0.5
    )
    learner.inner_step()
    assert phi["x"].item() == pytest.approx(1.05, abs=1e-12)
    learner.inner_step()
    assert phi["x"].item() == pytest.approx(1.095, abs=1e-12)


def test_cts_by_hand():
    # One task ½·2x², α = 0.1, β = 0.5, K = 2, φ₀ = 1.
    # step 1: θ₁ = 0.8; g = 0.2; φ₁ = 0.9; shift θ₁ → 0.7.
    # step 2: θ₂ = 0.7·0.8 = 0.56; g = 0.9 − 0.56 = 0.34; φ₂ = 0.9 − 0.17 = 0.73; restart θ = 0.73.
    phi = phi_of(1.0)
    learner = MetaLearner(phi, [Quadratic(2.0)], SGD(0.1), Reptile(), Schedule.cts(2), meta_lr=0.5)
    learner.inner_step()
    assert phi["x"].item() == pytest.approx(0.9)
    assert learner.params[0]["x"].item() == pytest.approx(0.7)
    learner.inner_step()
    assert phi["x"].item() == pytest.approx(0.73)
    assert learner.params[0]["x"].item() == pytest.approx(0.73)


@pytest.mark.parametrize("grad", ["reptile", "fomaml", "leap"])
@pytest.mark.parametrize("reset", [False, True])
def test_cts_with_meta_every_k_equals_plain(grad, reset):
    """meta_every = K puts the one meta-update just before the restart, which discards the shift."""

    def make(schedule):
        phi = phi_of(1.0, -2.0)
        tasks = [
            Quadratic(torch.tensor([1.0, 0.5], dtype=D), 0.3),
            Quadratic(torch.tensor([2.0, 1.5], dtype=D), -1.0),
        ]
        mg, _ = ALGORITHMS.get(grad).build(5)
        return phi, MetaLearner(
            phi, tasks, SGD(0.1, momentum=0.9), mg, schedule, meta_lr=0.3, reset_inner_state=reset
        )

    phi_a, a = make(Schedule(k=5, meta_every=5, shift=True))
    phi_b, b = make(Schedule.plain(5))
    a.run(23)
    b.run(23)
    assert torch.equal(phi_a["x"], phi_b["x"])
    assert torch.equal(a.params[1]["x"], b.params[1]["x"])


def test_fomaml_gradient_by_hand():
    # train f = ½(θ₀² + 2θ₁²), α = 0.1 from φ = (1, 1): θ₁ = (0.9, 0.8).
    # query q = (θ₀ − 1)² + θ₀θ₁: ∇q = (2(θ₀ − 1) + θ₁, θ₀) = (0.6, 0.9).
    task = Quadratic(
        torch.tensor([1.0, 2.0], dtype=D), query=lambda p: (p["x"][0] - 1) ** 2 + p["x"][0] * p["x"][1]
    )
    phi = phi_of(1.0, 1.0)
    learner = MetaLearner(phi, [task], SGD(0.1), FOMAML(), Schedule.plain(10))
    learner.inner_step()
    torch.testing.assert_close(learner.meta_gradient_now()["x"], torch.tensor([0.6, 0.9], dtype=D))


def test_official_cts_fomaml_by_hand():
    # The reference code's CTS-FOMAML: g = mean_t ∇f_t(θ_t) on the step's training batch, at the pre-step
    # θ, without weight decay; meta-update and shift first, then the inner SGD step with that gradient (its
    # weight decay at the shifted θ). Tasks x² (∇ = 2x) and ½(x − 2)² (∇ = x − 2); α = 0.1, wd = 0.1,
    # β = 0.25, φ = 1.
    # step 1: g = (2 + (−1))/2 = 0.5 → φ = 0.875, both θ → 0.875;
    #         θ_a = 0.875 − 0.1·(2 + 0.0875) = 0.66625, θ_b = 0.875 − 0.1·(−1 + 0.0875) = 0.96625.
    # step 2: g = (1.3325 − 1.03375)/2 = 0.149375 → φ = 0.83765625, shift −0.03734375 →
    #         θ = 0.62890625, 0.92890625;
    #         θ_a = 0.62890625 − 0.1·(1.3325 + 0.062890625) = 0.4893671875,
    #         θ_b = 0.92890625 − 0.1·(−1.03375 + 0.092890625) = 1.0229921875.
    mg, schedule = ALGORITHMS.get("cts-fomaml-official").build(10)
    assert schedule == Schedule.cts(10) and mg.before_inner_step
    phi = phi_of(1.0)
    learner = MetaLearner(
        phi, [Quadratic(2.0), Quadratic(1.0, 2.0)], SGD(0.1, weight_decay=0.1), mg, schedule, meta_lr=0.25
    )
    learner.inner_step()
    assert phi["x"].item() == pytest.approx(0.875, abs=1e-12)
    assert [p["x"].item() for p in learner.params] == pytest.approx([0.66625, 0.96625], abs=1e-12)
    learner.inner_step()
    assert phi["x"].item() == pytest.approx(0.83765625, abs=1e-12)
    assert [p["x"].item() for p in learner.params] == pytest.approx([0.4893671875, 1.0229921875], abs=1e-12)

    # cts-fomaml as defined differs: the query gradient after the step (here the training loss as query)
    # step 1: θ_a = 1 − 0.1·2.1 = 0.79, θ_b = 1 − 0.1·(−0.9) = 1.09; g = (1.58 − 0.91)/2 = 0.335 → φ = 0.91625
    phi = phi_of(1.0)
    mg, schedule = ALGORITHMS.get("cts-fomaml").build(10)
    learner = MetaLearner(
        phi, [Quadratic(2.0), Quadratic(1.0, 2.0)], SGD(0.1, weight_decay=0.1), mg, schedule, meta_lr=0.25
    )
    learner.inner_step()
    assert phi["x"].item() == pytest.approx(0.91625, abs=1e-12)


def test_leap_gradient_by_hand():
    # f = ½(θ₀² + 2θ₁²), SGD α = 0.1 from (1, 1): points (1,1), (0.9,0.8), (0.81,0.64) with losses
    # 1.5, 1.045, 0.73765 and gradients (1,2), (0.9,1.6).
    # segment 1: (0.1,0.2) + 0.455·(1,2) = (0.555, 1.11), length √(0.01+0.04+0.455²) = 0.5069763...
    # segment 2: (0.09,0.16) + 0.30735·(0.9,1.6) = (0.366615, 0.65176), length √0.128164 = 0.358
    task = Quadratic(torch.tensor([1.0, 2.0], dtype=D))
    learner = MetaLearner(phi_of(1.0, 1.0), [task], SGD(0.1), Leap(), Schedule.plain(10))
    learner.run(3)  # observes the first three points: two segments accumulated
    seg1 = torch.tensor([0.555, 1.11], dtype=D) / 0.257025**0.5
    seg2 = torch.tensor([0.366615, 0.65176], dtype=D) / 0.358
    torch.testing.assert_close(learner.meta_gradient_now()["x"], seg1 + seg2)


@pytest.mark.parametrize("stabilizer, expected", [(True, 3.125), (False, 1.875)])
def test_leap_stabilizer_by_hand(stabilizer, expected):
    # ½x², α = 2.5 overshoots: θ: 1 → −1.5, loss 0.5 → 1.125 (Δℓ = +0.625).
    # The stabilizer uses Δℓ = −0.625: increment (2.5 + 0.625·1)/‖(−2.5, 0.625)‖; without it (2.5 − 0.625)/….
    learner = MetaLearner(
        phi_of(1.0), [Quadratic(1.0)], SGD(2.5), Leap(stabilizer=stabilizer), Schedule.plain(10)
    )
    learner.run(2)
    length = (2.5**2 + 0.625**2) ** 0.5
    assert learner.meta_gradient_now()["x"].item() == pytest.approx(expected / length)


def test_leap_without_loss_term_is_normalised_path():
    learner = MetaLearner(phi_of(1.0), [Quadratic(1.0)], SGD(0.5), Leap(loss_term=False), Schedule.plain(10))
    learner.run(3)  # θ: 1 → 0.5 → 0.25, two unit-normalised segments pointing down: g = 2
    assert learner.meta_gradient_now()["x"].item() == pytest.approx(2.0)


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(1)
    m = torch.randn(6, 6, dtype=D, generator=g)
    a = m @ m.T + 6 * torch.eye(6, dtype=D)
    b = torch.randn(6, dtype=D, generator=g)
    x = conjugate_gradient(lambda v: a @ v, b, iters=6)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))


def test_imaml_solves_implicit_system():
    # Train loss ½ θᵀAθ (Hessian A), query ½‖θ − 1‖²: g = (I + A/λ)⁻¹ (θ − 1) at the final θ.
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=D)

    class Task:
        def train_loss(self, p):
            return 0.5 * p["x"] @ a @ p["x"]

        def query_loss(self, p):
            return 0.5 * (p["x"] - 1).pow(2).sum()

    learner = MetaLearner(
        phi_of(1.0, -1.0), [Task()], SGD(0.1), IMAML(lam=0.5, cg_steps=10), Schedule.plain(3)
    )
    learner.run(2)
    theta = learner.params[0]["x"].detach()
    expected = torch.linalg.solve(torch.eye(2, dtype=D) + a / 0.5, theta - 1)
    torch.testing.assert_close(learner.meta_gradient_now()["x"], expected)


def test_imaml_has_no_cts_form():
    with pytest.raises(UserError, match="imaml has no CTS form"):
        MetaLearner(phi_of(1.0), [Quadratic(1.0)], SGD(0.1), IMAML(), Schedule.cts(3))


def test_private_parameters_are_never_shifted_reset_or_meta_learned():
    class WithHead:
        def train_loss(self, p):
            return 0.5 * (p["x"] * p["head"] - 1).pow(2).sum()

        query_loss = train_loss

    phi = phi_of(0.5)
    learner = MetaLearner(
        phi,
        [WithHead(), WithHead()],
        SGD(0.1),
        Reptile(),
        Schedule.cts(3),
        meta_lr=0.5,
        private=[{"head": torch.tensor([2.0], dtype=D)}, {"head": torch.tensor([-1.0], dtype=D)}],
    )
    heads = [p["head"].clone() for p in learner.params]
    learner.inner_step()
    # the head moved by its own inner gradient only: no shift applied to it
    for t, p in enumerate(learner.params):
        x_before_update = 0.5
        grad = (x_before_update * heads[t] - 1) * x_before_update
        torch.testing.assert_close(p["head"], heads[t] - 0.1 * grad)
    assert set(phi) == {"x"}
    learner.run(2)  # crosses a restart: heads keep their values, bodies are reset to φ
    assert learner.step == 3
    for p in learner.params:
        assert torch.equal(p["x"], phi["x"])
        assert not torch.equal(p["head"], heads[0]) and not torch.equal(p["head"], heads[1])


def test_outer_step_by_any_torch_optimizer():
    phi = phi_of(1.0)
    adam = torch.optim.Adam(list(phi.values()), lr=0.1)
    learner = MetaLearner(phi, [Quadratic(2.0)], SGD(0.1), Reptile(), Schedule.plain(1), outer=adam)
    learner.inner_step()
    # Adam's first step moves by lr·sign(g) (g = 0.2 > 0): 1 − 0.1
    assert phi["x"].item() == pytest.approx(0.9, abs=1e-6)


def test_shift_error_is_zero_for_linear_losses_and_matches_hand_value_for_quadratics():
    class Linear:
        def train_loss(self, p):
            return (torch.tensor([1.0, -2.0], dtype=D) * p["x"]).sum()

        query_loss = train_loss

    learner = MetaLearner(
        phi_of(1.0, 1.0), [Linear()], SGD(0.1, momentum=0.9), Reptile(), Schedule.cts(8), meta_lr=0.3
    )
    probe = ShiftErrorProbe(learner)
    learner.run(8)
    assert [r["k"] for r in probe.records] == [1, 2, 4, 8]
    assert max(r["shift_error"] for r in probe.records) < 1e-12  # zero Hessian: the shift is exact

    # ½·2x², α = 0.1, β = 0.5, φ₀ = 1: error after one step = βα²a²φ₀ = 0.5·0.01·4 = 0.02
    learner = MetaLearner(phi_of(1.0), [Quadratic(2.0)], SGD(0.1), Reptile(), Schedule.cts(4), meta_lr=0.5)
    probe = ShiftErrorProbe(learner, at=[1])
    learner.run(1)
    assert probe.records[0]["shift_error"] == pytest.approx(0.02)


def test_schedule_rejects_bad_values():
    for bad in (
        dict(k=0, meta_every=1, shift=True),
        dict(k=5, meta_every=6, shift=True),
        dict(k=-3, meta_every=1, shift=False),
    ):
        with pytest.raises(UserError):
            Schedule(**bad)
    with pytest.raises(
        UserError, match=r"unknown algorithm 'maml' \(valid: cts, cts-fomaml, cts-fomaml-official"
    ):
        ALGORITHMS.get("maml")
