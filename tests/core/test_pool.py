"""Task pools: the draw, the slots, and what a task keeps across the trajectories it is drawn for — against
numbers worked out by hand."""

from __future__ import annotations

import pytest
import torch

from largemeta.core import SGD, MetaLearner, Reptile, Schedule
from largemeta.core.assignment import TaskPool, check_pool
from largemeta.errors import UserError

D = torch.float64


class Bowl:
    """½ a (x − c)² on the shared x plus ½ (h − d)² on the task's private h."""

    def __init__(self, a: float, c: float, d: float) -> None:
        self.a, self.c, self.d = a, c, d

    def train_loss(self, params):
        return 0.5 * self.a * (params["x"] - self.c).pow(2).sum() + 0.5 * (params["h"] - self.d).pow(2).sum()

    query_loss = train_loss


def make_pool(bowls, m, seed=0, log=None, **kw):
    def activate(p, state):
        log is not None and log.append(("in", p))
        return bowls[p], dict(state) if state is not None else {"h": torch.zeros(1, dtype=D)}

    def deactivate(p, task, private):
        log is not None and log.append(("out", p))
        return {k: v.detach().clone() for k, v in private.items()}

    return TaskPool(len(bowls), m, seed=seed, activate=activate, deactivate=deactivate, **kw)


def test_every_task_is_drawn_once_per_pass():
    pool = make_pool([None] * 10, 3)
    drawn = [pool.draw() for _ in range(10)]  # 30 draws: exactly three passes over the 10 tasks
    assert all(len(set(d)) == 3 for d in drawn)
    flat = [p for d in drawn for p in d]
    assert sorted(flat) == sorted(list(range(10)) * 3)
    assert set(flat[:12]) == set(range(10))  # within ⌈10/3⌉ = 4 trajectories every task has run


def test_the_draw_is_seeded_and_resumes_from_its_state():
    a, b = make_pool([None] * 7, 3, seed=5), make_pool([None] * 7, 3, seed=5)
    assert [a.draw() for _ in range(3)] == [b.draw() for _ in range(3)]
    state = {**a.state_dict(), "generator": a.generator.get_state()}
    later = [a.draw() for _ in range(4)]
    c = make_pool([None] * 7, 3, seed=123)
    c.generator.set_state(state["generator"])
    c.queue = list(state["queue"])
    assert [c.draw() for _ in range(4)] == later
    assert make_pool([None] * 7, 3, seed=6).draw() != make_pool([None] * 7, 3, seed=5).draw()


def test_a_task_drawn_again_keeps_its_slot():
    pool = make_pool([None] * 6, 3)
    pool.assignment = [4, 1, 5]
    assert pool.assign([0, 5, 2]) == [0, 2, 5]  # 5 stays in slot 2; 0 and 2 fill slots 0 and 1 in draw order


@pytest.mark.parametrize(
    "size, m, world, needle",
    [(5, 6, 1, "larger than the pool"), (5, 0, 1, "larger than the pool"), (5, 2, 3, "below the 3 ranks")],
)
def test_bad_sizes_are_one_line(size, m, world, needle):
    with pytest.raises(UserError, match=needle) as err:
        check_pool(size, m, world)
    assert "\n" not in str(err.value)


def test_pooled_reptile_by_hand():
    """M = 1 of 3 bowls, plain Reptile with β = 1 (φ ← θ_K), K = 2, SGD α = 0.25.

    Two SGD steps on ½ a (x − c)² from x: x₂ = c + (1 − α a)² (x − c); on ½ (h − d)²:
    h₂ = d + (1 − α)² (h − d). So after each trajectory φ = c_p + (1 − α a_p)² (φ − c_p) for the drawn
    task p, and p's head moves by the factor (1 − α)² = 0.5625 towards d_p every time p is drawn —
    continuing from where it stopped.
    """
    bowls = [Bowl(1.0, 2.0, 1.0), Bowl(2.0, -1.0, -3.0), Bowl(0.5, 4.0, 2.0)]
    pool = make_pool(bowls, 1, seed=3)
    phi = {"x": torch.tensor([0.0], dtype=D)}
    tasks, private = pool.start()
    learner = MetaLearner(
        phi, tasks, SGD(0.25), Reptile(), Schedule.plain(2), private=private, meta_lr=1.0, assignment=pool
    )
    order = [pool.assignment[0]]
    x, heads = 0.0, {p: 0.0 for p in range(3)}
    for _ in range(7):
        p = order[-1]
        b = bowls[p]
        learner.run(2)
        x = b.c + (1 - 0.25 * b.a) ** 2 * (x - b.c)
        heads[p] = b.d + 0.5625 * (heads[p] - b.d)
        assert phi["x"].item() == pytest.approx(x, abs=1e-12)
        order.append(pool.assignment[0])
    for p in range(3):  # the live head, or the one kept while the task is not drawn
        h = learner.params[0]["h"] if pool.assignment[0] == p else pool.stored[p]["h"]
        assert h.item() == pytest.approx(heads[p], abs=1e-12), p
    assert set(order) == {0, 1, 2}


def test_a_changed_slot_starts_a_fresh_inner_state_and_a_kept_one_keeps_it():
    bowls = [Bowl(1.0, float(i), 0.0) for i in range(4)]
    log: list = []
    pool = make_pool(bowls, 2, seed=0, log=log)
    tasks, private = pool.start()
    phi = {"x": torch.tensor([0.0], dtype=D)}
    learner = MetaLearner(
        phi,
        tasks,
        SGD(0.1, momentum=0.9),
        Reptile(),
        Schedule.cts(2),
        private=private,
        meta_lr=0.1,
        assignment=pool,
    )
    before = list(pool.assignment)
    learner.run(1)
    buffers = [s["momentum_buffer"] for s in learner.runner.inner_states]
    assert all(b is not None for b in buffers)
    pool.assignment = [before[0], before[1]]
    new = pool.assign([before[0], next(p for p in range(4) if p not in before)])
    pool._leave(new)
    pool._swap(new)
    states = learner.runner.inner_states
    assert states[0]["momentum_buffer"] is buffers[0]  # the task drawn again: untouched
    assert states[1].get("momentum_buffer") is None  # the new one: fresh
    assert learner.runner.tasks[1] is bowls[new[1]] and ("out", before[1]) in log


def test_two_ranks_share_the_slots_and_hand_over_leaving_tasks():
    """Two pools as two ranks (slots 0, 2 and 1, 3 of M = 4), exchanging in memory: each runs its own slots,
    and after a redraw each holds the state of every task that left a slot on either rank."""
    bowls = [Bowl(1.0, float(i), float(i)) for i in range(6)]
    pools: list[TaskPool] = []
    inbox: dict[int, dict] = {}

    def exchange_for(rank):
        def exchange(leaving):
            inbox[rank] = leaving
            merged: dict = {}
            for part in inbox.values():
                merged.update(part)
            return merged

        return exchange

    learners = []
    for rank in (0, 1):
        pool = make_pool(bowls, 4, seed=9, local=[rank, rank + 2], exchange=exchange_for(rank))
        tasks, private = pool.start()
        phi = {"x": torch.tensor([0.0], dtype=D)}
        learner = MetaLearner(
            phi, tasks, SGD(0.1), Reptile(), Schedule.plain(3), private=private, assignment=pool
        )
        pools.append(pool)
        learners.append(learner)
    assert (
        pools[0].assignment == pools[1].assignment and pools[0].local == [0, 2] and pools[1].local == [1, 3]
    )
    assert [t.c for t in learners[1].runner.tasks] == [float(pools[1].assignment[s]) for s in (1, 3)]
    for learner in learners:
        learner.run(3)  # each rank restarts and redraws (the second rank sees the first's leavers)
    left = {p for p in range(6) if p in pools[0].stored or p in pools[1].stored}
    assert left and left <= set(pools[1].stored)
