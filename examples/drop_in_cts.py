"""Continual Trajectory Shifting in your own training loop (Shin et al., ICML 2021).

Several classification tasks on generated data, each with its own head (different class counts), share a
meta-learned body φ. The loop is an ordinary PyTorch loop with one extra line, ``cts.step()``.

    python examples/drop_in_cts.py --steps 300                       # all tasks in one process
    torchrun --nproc_per_node 2 examples/drop_in_cts.py --steps 300  # tasks spread over 2 processes (gloo)

Both runs compute the same φ (up to float rounding): task t lives on rank t % world_size.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from largemeta import ContinualTrajectoryShifting
from largemeta.train.distributed import leave


class Net(nn.Module):
    """A small MLP body and a linear head; the default shared rule meta-learns all but ``head``."""

    def __init__(self, in_dim: int, classes: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class GeneratedTask:
    """Labels = argmax of a fixed random 2-layer teacher; the same seed gives the same batches anywhere."""

    def __init__(self, index: int, seed: int, in_dim: int = 8, batch: int = 32):
        self.gen = torch.Generator().manual_seed(seed * 1000 + index)
        self.classes = 3 + index  # heads of different shapes across tasks
        self.w1 = torch.randn(in_dim, 16, generator=self.gen)
        self.w2 = torch.randn(16, self.classes, generator=self.gen)
        self.in_dim, self.batch = in_dim, batch

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(self.batch, self.in_dim, generator=self.gen)
        return x, (torch.tanh(x @ self.w1) @ self.w2).argmax(1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="cumulative inner steps")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--k", type=int, default=50, help="inner steps before every trajectory restarts from phi")
    ap.add_argument("--meta-lr", type=float, default=0.05)
    ap.add_argument("--algorithm", choices=["cts", "reptile"], default="cts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-phi", help="write phi (a model-shaped state_dict of task 0's model) here")
    args = ap.parse_args(argv)

    rank, world = 0, 1
    if "WORLD_SIZE" in os.environ:  # started by torchrun: one process group, gloo runs on CPUs
        dist.init_process_group("gloo", timeout=timedelta(seconds=60))
        rank, world = dist.get_rank(), dist.get_world_size()
    mine = range(rank, args.tasks, world)
    tasks = [GeneratedTask(t, args.seed) for t in mine]
    models = []
    for t, task in zip(mine, tasks, strict=True):
        torch.manual_seed(args.seed * 1000 + t)  # each head's init depends on its task only; bodies become φ
        models.append(Net(task.in_dim, task.classes))
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in models]

    # φ = task 0's body (rank 0's, broadcast); every body starts there. Heads stay per task.
    cts = ContinualTrajectoryShifting(models, k=args.k, meta_lr=args.meta_lr, algorithm=args.algorithm)

    for step in range(1, args.steps + 1):
        losses = []
        for model, opt, task in zip(models, opts, tasks, strict=True):
            x, y = task.next_batch()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        cts.step()  # meta-update φ, shift every body with it, restart from φ every k steps
        if rank == 0 and (step % max(args.steps // 5, 1) == 0 or step == args.steps):
            print(f"step {step:5d}  loss (rank 0 tasks) {sum(losses) / len(losses):.4f}")

    if rank == 0:
        n = sum(v.numel() for v in cts.phi.values())
        norm = torch.cat([v.reshape(-1) for v in cts.phi.values()]).norm().item()
        print(f"phi: {len(cts.phi)} tensors, {n} parameters, norm {norm:.6f}")
        if args.save_phi:
            torch.save(cts.export_state_dict(), args.save_phi)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    if "WORLD_SIZE" in os.environ:
        # torch keeps Gloo's threads past destroy_process_group(), and at interpreter shutdown they can
        # abort a finished run (SIGABRT): end without finalization, output flushed — as largemeta's CLI does.
        leave(0)
