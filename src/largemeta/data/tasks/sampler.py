"""A task's seeded minibatch stream, apart from where its images are kept: :class:`TaskSampler`.

Which training images a batch takes and how they are augmented is decided here, by one ``torch.Generator``
per task, in one fixed order per batch::

    indices  = randint(n, (B,))                      uniform, with replacement
    offsets  = randint(0, 2 * padding + 1, (2, B))   crop (top, left) per image, only when padding > 0
    flip     = rand(B) < 0.5                         mirror mask, only when the task flips

The generator state is the whole sampling state: restoring it (:meth:`TaskSampler.load_state_dict`) resumes
the identical stream. The storage (:class:`~largemeta.data.tasks.images.DeviceRows`, images on the device;
:class:`~largemeta.data.tasks.stream.StreamRows`, images on disk) only fetches the rows a :class:`Draw` names.

The generator lives on the device the draws are used on: the training device for device-resident images
(so a step needs no host work and no host-to-device copy), the CPU for streamed ones (drawn ahead, in the main
process, of batches decoded by worker processes). On a CPU the two are the same generator and both storages
give the same batches; on CUDA a CUDA generator draws a different (equally valid) sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Draw:
    """One batch's random choices: row ``indices`` (B,), crop ``offsets`` (2, B) or None, flip ``mask`` (B,)
    or None, on the sampler's device."""

    indices: torch.Tensor
    offsets: torch.Tensor | None
    mask: torch.Tensor | None

    def to(self, device: torch.device) -> Draw:
        """The same draw on ``device`` (copies only what is elsewhere)."""
        return Draw(
            self.indices.to(device),
            None if self.offsets is None else self.offsets.to(device),
            None if self.mask is None else self.mask.to(device),
        )


class TaskSampler:
    """Draws a task's training batches (:class:`Draw`) from ``num_rows`` images, seeded with ``seed``.

    Args:
        num_rows: how many training images there are to draw from.
        padding: random-crop padding in pixels (0: no crop draws).
        flip: whether to draw a mirror mask.
        seed: the task's sampling seed.
        device: where the generator and the draws live (see the module docstring).
    """

    def __init__(
        self, num_rows: int, *, padding: int, flip: bool, seed: int, device: str | torch.device = "cpu"
    ) -> None:
        self.num_rows, self.padding, self.flip, self.seed = num_rows, padding, flip, seed
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def draw(self, batch: int) -> Draw:
        """The next batch's indices, crop offsets and flip mask, in the order the module docstring gives."""
        g, dev = self.generator, self.device
        indices = torch.randint(self.num_rows, (batch,), device=dev, generator=g)
        crop = 2 * self.padding + 1
        offsets = torch.randint(0, crop, (2, batch), device=dev, generator=g) if self.padding else None
        mask = torch.rand(batch, device=dev, generator=g) < 0.5 if self.flip else None
        return Draw(indices, offsets, mask)

    def get_state(self) -> torch.Tensor:
        """The generator state (a CPU uint8 tensor) before the next draw."""
        return self.generator.get_state()

    def state_dict(self, state: torch.Tensor | None = None) -> dict[str, Any]:
        """What to checkpoint: the generator ``state`` (default: now) and the seed."""
        return {"generator": (self.get_state() if state is None else state).clone(), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume drawing exactly where :meth:`state_dict` was taken."""
        self.generator.set_state(state["generator"])
        self.seed = int(state.get("seed", self.seed))
