"""Run by torchrun from test_example_and_torchrun.py: ranks with different shared shapes all fail clearly."""

from datetime import timedelta

import torch.distributed as dist
from torch import nn

from largemeta import ContinualTrajectoryShifting
from largemeta.errors import UserError

dist.init_process_group("gloo", timeout=timedelta(seconds=60))
rank = dist.get_rank()
model = nn.Sequential(nn.Linear(3, 4 + rank), nn.ReLU(), nn.Linear(4 + rank, 2))
try:
    ContinualTrajectoryShifting(model)
except UserError as err:  # the expected outcome: report it for the test to read
    print(f"rank {rank}: {err}", flush=True)
else:
    raise SystemExit(f"rank {rank}: no error for different shared shapes")
finally:
    dist.destroy_process_group()
