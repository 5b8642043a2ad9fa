"""Who runs and who writes what under torchrun: the *slots* (trajectories) of a run over its ranks.

A run has M slots: one per meta-train task with a fixed task list, ``tasks_per_trajectory`` with a task pool
(:mod:`largemeta.core.assignment`). With M slots on W ranks:

* **W ≤ M** — slots are dealt round-robin (rank r runs slots r, r + W, …), each on one rank, which writes its
  checkpoint entries.
* **W > M** — (a fixed task list only: a pool needs M ≥ W) W must be a multiple of M, and each slot is served
  by a *group* of G = W / M consecutive ranks (:mod:`largemeta.train.groups`); the group's first rank, its
  leader, writes the slot's checkpoint entries.
"""

from __future__ import annotations

from dataclasses import dataclass

from largemeta.errors import UserError


def valid_world_sizes(tasks: int) -> str:
    """The world sizes that can serve ``tasks`` tasks, in words."""
    small = f"1..{tasks}" if tasks > 1 else "1"
    return f"{small} (tasks spread over ranks) or a multiple of {tasks}: {2 * tasks}, {3 * tasks}, ..."


@dataclass(frozen=True)
class Layout:
    """Where the slots live: ``slots`` trajectories on ``world`` ranks, seen from ``rank``."""

    slots: int
    world: int
    rank: int

    @property
    def group_size(self) -> int:
        """G: ranks per task (1 unless there are more ranks than tasks)."""
        return self.world // self.slots if self.world > self.slots else 1

    @property
    def mine(self) -> list[int]:
        """This rank's slots (global indices)."""
        g = self.group_size
        return list(range(self.rank, self.slots, self.world)) if g == 1 else [self.rank // g]

    @property
    def part(self) -> int:
        """This rank's index within its slot's group (0: the leader, which writes its checkpoint entries)."""
        return self.rank % self.group_size

    @property
    def leader(self) -> bool:
        return self.part == 0

    def ranks(self, slot: int) -> list[int]:
        """The ranks that serve ``slot``."""
        g = self.group_size
        return [slot % self.world] if g == 1 else list(range(slot * g, slot * g + g))


def layout(slots: int, rank: int, world: int) -> Layout:
    """The :class:`Layout` of ``slots`` slots on ``world`` ranks; a one-line UserError for a world size that
    cannot serve them."""
    if slots < 1:
        raise UserError("no meta-train tasks to spread over ranks")
    if world > slots and world % slots:
        raise UserError(
            f"{world} ranks cannot serve {slots} meta-train tasks in equal groups "
            f"(valid world sizes: {valid_world_sizes(slots)})"
        )
    return Layout(slots, world, rank)
