"""Run by test_task_groups.py under torchrun (2 gloo ranks): a BatchNorm body on half a batch per rank, with
GroupBatchNorm and averaged gradients, against the same body on the whole batch in one process; through
``torch.func.functional_call`` with a task's own buffers, as the trainer runs it. Rank 0 writes JSON to
argv[1]."""

import copy
import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from largemeta.models.functional import apply, split_state
from largemeta.models.sync_batchnorm import convert_batchnorm
from largemeta.train.distributed import leave


def grads_and_buffers(model, x, y, group_size):
    params, buffers = split_state(model)
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    params["head.weight"] = torch.ones(3, 4, requires_grad=True) / 4
    params["head.bias"] = torch.zeros(3, requires_grad=True)
    loss = F.cross_entropy(apply(model, params, buffers, x, train=True), y)
    grads = torch.autograd.grad(loss, list(params.values()))
    grads = [g.clone() for g in grads]
    for g in grads if group_size > 1 else ():
        dist.all_reduce(g)  # the group's mean gradient, as GroupAverage takes it
        g /= group_size
    return grads, buffers


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.BatchNorm1d(4),
    )
    x, y = torch.randn(8, 1, 6, 6) * 3 + 1, torch.randint(0, 3, (8,))
    whole, whole_buffers = grads_and_buffers(copy.deepcopy(body), x, y, 1)
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    local, local_buffers = grads_and_buffers(copy.deepcopy(body), x[part], y[part], world)
    synced = copy.deepcopy(body)
    assert convert_batchnorm(synced, dist.group.WORLD, world) == 2
    group, group_buffers = grads_and_buffers(synced, x[part], y[part], world)

    def gap(a, b):
        return max(float((p - q).abs().max()) for p, q in zip(a, b, strict=True))

    result = {
        "synced_grad_gap": gap(whole, group),
        "synced_buffer_gap": gap(list(whole_buffers.values()), list(group_buffers.values())),
        "local_grad_gap": gap(whole, local),
        "local_buffer_gap": gap(list(whole_buffers.values()), list(local_buffers.values())),
    }
    if rank == 0:
        with open(sys.argv[1], "w") as fh:
            json.dump(result, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    leave(0)  # no interpreter finalization after Gloo: largemeta.train.distributed.leave
