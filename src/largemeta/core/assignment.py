"""Which meta-train task runs in which *slot* of a :class:`~largemeta.core.engine.MetaLearner`: a
:class:`TaskAssignment`.

A learner runs M slots (trajectories). The paper meta-learns over a fixed list of tasks, all of them in every
meta-update: :class:`Static`, task s in slot s for the whole run — a pool that never redraws. With dozens of
datasets a trajectory instead draws a few tasks from a pool (the generalisation the paper mentions):
:class:`TaskPool`, N pool tasks in M slots, drawn afresh at the start and at every restart::

    every restart (and at the start):
        drawn = next M tasks of the pool        # seeded; see draw()
        every slot s whose task changes:        # a task drawn again keeps its slot, and everything in it
            pool task leaving s: keep its private parameters (head), BatchNorm statistics, sampler state
            pool task entering s: bring back its own (or fresh ones, the first time it is drawn);
                                  the slot's shared parameters are φ already (the restart just set them);
                                  its inner optimizer state starts afresh
    the meta-gradient is the mean over the M active tasks (of every rank)

**The draw.** Tasks are drawn without replacement pass by pass: the pool is shuffled (``torch.randperm`` on a
seeded CPU generator), trajectories take M tasks at a time from the shuffle, and a new shuffle continues it
when fewer than M remain (skipping a task already drawn for the same trajectory). So every pool task is active
once in every ⌈N/M⌉ trajectories or so — no task waits for a lucky draw. The generator and what is left of the
shuffle are the pool's state (:meth:`TaskPool.state_dict`), so a resumed run draws what the uninterrupted run
would have.

**Inner optimizer state.** A slot's momentum buffers were accumulated along another task's trajectory; carried
into a new task they would push its first steps along a direction that task never took (and a head's would not
even have its shape). So a slot whose task changes starts a fresh inner state. A task drawn again for the next
trajectory stays in its slot and keeps its state exactly as with a fixed task list (where the state is kept
across restarts unless ``reset_inner_state``).

**Many processes.** Each rank runs its own slots (``local``: which ones is the caller's layout); every rank
draws the same tasks (same generator), so M ≥ world. A task that leaves a slot hands its state to every rank
(``exchange``: one all-gather of the leaving tasks' small states per restart), so whichever rank draws it
next continues it, and rank 0 can checkpoint the whole pool.

An assignment never builds tasks: ``activate(p, state)`` returns task p as ``(task, private parameters)``
(loading its images, fresh when ``state`` is None) and ``deactivate(p, task, private)`` returns the state to
keep while it is inactive (and releases what it held, e.g. its images on the device). It changes the learner
only through the narrow :class:`Slots` interface (the learner's runner), bound by the learner, and only when
the learner calls :meth:`TaskAssignment.restart` — one step of the learner's restart sequence. Both kinds are
*Stateful* (``state_dict`` / ``load_state_dict``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from largemeta.core.metagrad import Task
from largemeta.core.params import Params
from largemeta.errors import UserError

Activate = Callable[[int, Any], "tuple[Task, Params]"]
Deactivate = Callable[[int, Task, Params], Any]
Exchange = Callable[[dict[int, Any]], dict[int, Any]]


class Slots(Protocol):
    """What an assignment may change of a learner: the task running in each of this process's slots (by
    local index), their private parameters, and putting another task in one."""

    tasks: list[Task]

    def private(self, t: int) -> Params: ...

    def assign(self, t: int, task: Task, private: Params) -> None: ...


class TaskAssignment(Protocol):
    """Which task runs in which slot: ``assignment[s]`` is slot s's task (every rank's slots), ``local`` this
    process's slots. :meth:`start` builds the local slots' first tasks; :meth:`bind` hands it the learner's
    :class:`Slots`; :meth:`restart` runs at every restart of the learner."""

    size: int
    assignment: list[int]
    local: list[int]

    def start(self, step: int = 0) -> tuple[list[Task], list[Params]]: ...

    def bind(self, slots: Slots) -> None: ...

    def restart(self, step: int) -> None: ...

    def log_fields(self, names: Sequence[str]) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Static:
    """A fixed task list: task s in slot s for the whole run (a pool that never redraws)."""

    def __init__(self, size: int, *, activate: Activate, local: Sequence[int] | None = None) -> None:
        self.size, self.activate = size, activate
        self.assignment = list(range(size))
        self.local = list(range(size)) if local is None else list(local)

    def start(self, step: int = 0) -> tuple[list[Task], list[Params]]:
        built = [self.activate(s, None) for s in self.local]
        return [t for t, _ in built], [p for _, p in built]

    def bind(self, slots: Slots) -> None:
        pass

    def restart(self, step: int) -> None:
        pass

    def log_fields(self, names: Sequence[str]) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def check_pool(size: int, per_trajectory: int, world: int = 1) -> None:
    """``UserError`` in one line unless 1 <= per_trajectory <= size and per_trajectory >= world."""
    if not 1 <= per_trajectory <= size:
        raise UserError(
            f"tasks_per_trajectory={per_trajectory} is larger than the pool: it has {size} tasks "
            f"(valid: 1..{size}, or 0 for all of them in every trajectory)"
        )
    if per_trajectory < world:
        raise UserError(
            f"tasks_per_trajectory={per_trajectory} is below the {world} ranks: every rank needs an "
            f"active task (valid: {world}..{size})"
        )


class TaskPool:
    """``size`` pool tasks, ``per_trajectory`` of them active at a time (see the module docstring).

    Args:
        size: N, the number of pool tasks (indices 0..N-1).
        per_trajectory: M, with 1 <= M <= N and M >= world.
        seed: seeds the draw.
        activate: ``activate(p, state_or_None) -> (task, private)``.
        deactivate: ``deactivate(p, task, private) -> state`` (keep it small: it crosses ranks).
        local: this process's slots (default: all of them).
        exchange: ``exchange(leaving) -> every rank's leaving`` (an all-gather of dicts); None alone.

    Use: ``tasks, private = pool.start()``, then ``MetaLearner(..., assignment=pool)`` (which binds it).
    """

    KEEP_DRAWS = 1000

    def __init__(
        self,
        size: int,
        per_trajectory: int,
        *,
        seed: int,
        activate: Activate,
        deactivate: Deactivate,
        local: Sequence[int] | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        check_pool(size, per_trajectory)
        self.size, self.per_trajectory = size, per_trajectory
        self.generator = torch.Generator().manual_seed(seed)
        self.queue: list[int] = []
        self.assignment: list[int] = []
        self.local = list(range(per_trajectory)) if local is None else list(local)
        self.stored: dict[int, Any] = {}
        """The state of every pool task as it left its last slot (inactive tasks' are current)."""
        self.draws: list[tuple[int, list[int]]] = []
        """(step, assignment) of each draw not yet read by :meth:`take_draws`."""
        self.activate, self.deactivate = activate, deactivate
        self.exchange: Exchange = exchange or (lambda leaving: leaving)
        self.slots: Slots | None = None

    # the draw --------------------------------------------------------------------------------------------
    def draw(self) -> list[int]:
        """The next M distinct pool tasks (see the module docstring); advances the generator and the queue."""
        drawn: list[int] = []
        while len(drawn) < self.per_trajectory:
            if not any(p not in drawn for p in self.queue):
                self.queue += torch.randperm(self.size, generator=self.generator).tolist()
            i = next(i for i, p in enumerate(self.queue) if p not in drawn)
            drawn.append(self.queue.pop(i))
        return drawn

    def assign(self, drawn: list[int]) -> list[int]:
        """Slots for the drawn tasks: a task drawn again keeps its slot, the others fill the rest in order."""
        if not self.assignment:
            return list(drawn)
        new: list[int | None] = [p if p in drawn else None for p in self.assignment]
        entering = iter(p for p in drawn if p not in new)
        return [p if p is not None else next(entering) for p in new]

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self, step: int = 0) -> tuple[list[Task], list[Params]]:
        """The first draw: this rank's slot tasks and their private parameters, to build the learner with."""
        self.assignment = self.assign(self.draw())
        self.draws.append((step, list(self.assignment)))
        built = [self.activate(self.assignment[s], self.stored.get(self.assignment[s])) for s in self.local]
        return [t for t, _ in built], [p for _, p in built]

    def bind(self, slots: Slots) -> None:
        """The learner's slots (built from :meth:`start`'s tasks), which :meth:`restart` refills."""
        self.slots = slots

    def _bound(self) -> Slots:
        if self.slots is None:
            raise RuntimeError("the task pool is not bound to a learner (MetaLearner(..., assignment=pool))")
        return self.slots

    def restart(self, step: int) -> None:
        """Draw the next trajectory's tasks and swap the changed slots (the learner's shared parameters are
        φ already)."""
        new = self.assign(self.draw())
        self._leave(new)
        self._swap(new)
        self.draws.append((step, list(new)))
        del self.draws[: -self.KEEP_DRAWS]  # unread (ranks other than 0 never read them): keep the last ones

    def _leave(self, new: list[int]) -> None:
        """Keep the state of every rank's tasks that leave their slot for ``new`` (one exchange)."""
        slots = self._bound()
        leaving = {}
        for local, s in enumerate(self.local):
            if new[s] != self.assignment[s]:
                p = self.assignment[s]
                leaving[p] = self.deactivate(p, slots.tasks[local], slots.private(local))
        self.stored.update(self.exchange(leaving))

    def _swap(self, new: list[int], *, all_slots: bool = False) -> None:
        slots = self._bound()
        for local, s in enumerate(self.local):
            if all_slots or new[s] != self.assignment[s]:
                old = slots.tasks[local]
                task, private = self.activate(new[s], self.stored.get(new[s]))
                if hasattr(old, "memory_format") and hasattr(task, "memory_format"):
                    # an executor's choice of input format (channels-last) carries over to the new task
                    task.memory_format = old.memory_format
                slots.assign(local, task, private)
        self.assignment = list(new)

    def log_fields(self, names: Sequence[str]) -> dict[str, Any]:
        """For a metrics line: the active tasks (slot order) and the draws since the last call."""
        out: dict[str, Any] = {"active_tasks": [names[p] for p in self.assignment]}
        draws = self.take_draws()
        if draws:
            out["draws"] = [{"step": step, "tasks": [names[p] for p in drawn]} for step, drawn in draws]
        return out

    def take_draws(self) -> list[tuple[int, list[int]]]:
        """The draws since the last call: ``(step, pool task of each slot)``."""
        out, self.draws = self.draws, []
        return out

    # checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The draw's state and the assignment (the tasks' own states: :attr:`stored` and the live slots)."""
        return {
            "generator": self.generator.get_state(),
            "queue": list(self.queue),
            "assignment": list(self.assignment),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the draw and the assignment, and put every slot's saved task back with its saved state
        (:attr:`stored`, which the caller has filled with the saved pool tasks' states first); the slots'
        parameters and inner states are the learner's to load after this."""
        if len(state["assignment"]) != self.per_trajectory or any(
            not 0 <= int(p) < self.size for p in state["assignment"]
        ):
            raise UserError(
                f"checkpoint pool assignment {list(state['assignment'])} does not fit this run's pool of "
                f"{self.size} tasks, {self.per_trajectory} per trajectory"
            )
        self.generator.set_state(state["generator"])
        self.queue = [int(p) for p in state["queue"]]
        slots = self._bound()
        for local, s in enumerate(self.local):  # what runs now is replaced whole: release it
            p = self.assignment[s]
            self.deactivate(p, slots.tasks[local], slots.private(local))
        self._swap([int(p) for p in state["assignment"]], all_slots=True)
        self.draws = []
