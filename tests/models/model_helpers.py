"""Small image problems for the model/execution tests: a body, φ, tasks on random-image samplers, heads.

Imported by module name (the test directories are not packages), hence the distinctive name.
"""

from __future__ import annotations

import torch

from largemeta.core import SGD, MetaLearner, Reptile, Schedule
from largemeta.models import ImageTask, create_model, init_head, split_state
from largemeta.testing import RandomImageSampler


def image_problem(specs=((16, 5), (16, 5), (20, 3)), *, model="convnet", batch=8, seed=0, device="cpu",
                  **model_kw):
    """(body, φ, tasks, heads) for tasks given as (image size, classes); same seed → same everything."""
    torch.manual_seed(seed)
    body = create_model(model, **model_kw)
    phi, _ = split_state(body)
    phi = {k: v.to(device) for k, v in phi.items()}
    tasks, heads = [], []
    for i, (size, classes) in enumerate(specs):
        sampler = RandomImageSampler(size, classes, pool=64, seed=100 * seed + 10 * i)
        task = ImageTask(body, sampler, classes=classes, batch_size=batch, device=device, name=f"t{i}")
        tasks.append(task)
        head = init_head(classes, body.num_features, torch.Generator().manual_seed(1000 + i))
        heads.append({k: v.to(device) for k, v in head.items()})
    return body, phi, tasks, heads


def make_learner(executor=None, *, inner=None, schedule=None, meta_gradient=None, meta_lr=0.1, **problem_kw):
    body, phi, tasks, heads = image_problem(**problem_kw)
    return MetaLearner(
        phi, tasks, inner or SGD(0.05, momentum=0.9, weight_decay=5e-4), meta_gradient or Reptile(),
        schedule or Schedule.cts(k=4), private=heads, meta_lr=meta_lr, executor=executor,
    )
