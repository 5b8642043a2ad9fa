"""The scaling model of docs/scaling.md as arithmetic: communication per meta-step, and meta-step time and
efficiency projected to 8, 64 and 512 GPUs for the paper's ResNet-20 suite and for a ResNet-50 body. JSON on
stdout; no GPU needed (nothing is measured here: the inputs are stated below, with their sources).

    python benchmarks/scaling_model.py [--resnet50-images-per-s 3000]

Model of one CTS meta-step (a meta-update every inner step) with T tasks on W ranks, G = W / T ranks per task
(1 when W <= T), nothing overlapped (largemeta runs its collectives after the backward, in order)::

    t(W) = compute(W) + t_ar(meta-gradient, W ranks)
           + [G > 1] (t_ar(task gradients, G ranks) + 2 L t_ar(BatchNorm statistics of one layer, G ranks))
    t_ar(bytes, n) = alpha(n) + 2 (n - 1) / n * bytes / busbw(n)            (NCCL's bus-bandwidth convention)

compute(W): W <= T — the slowest rank's tasks at full batch, one after the other; W > T — the slowest task on
1/G of its batch. Efficiency = t(1) / (W t(W)): the share of a linear speed-up over one GPU running every
task.
"""

from __future__ import annotations

import argparse
import json

# ---------------------------------------------------------------------------------------------- inputs
NETWORK = {
    "gpus_per_node": 8,
    # nccl-tests all_reduce_perf busbw at large sizes: 8x H100 SXM5, NVLink-4/NVSwitch: 460-480 GB/s
    # (docs.alayanew.com, "NCCL-tests in practice", 2026-05-06); H100 SXM nodes over InfiniBand NDR:
    # 400-450 GB/s (saturncloud.io, "Validating Multi-Node GPU Clusters with NCCL Tests"). The low ends.
    "busbw_intra_node_gb_s": 450.0,
    "busbw_inter_node_gb_s": 400.0,
    # Per-call latency of a small all-reduce: an assumption (not a published figure): NCCL's small-message
    # all-reduce takes tens of microseconds within a node and grows with the number of nodes.
    "alpha_us": {"intra_node": 15.0, "2-8 nodes": 40.0, "64 nodes": 80.0},
}
RESNET20 = {
    # this repository's model: 269,072 body parameters, 19 BatchNorm layers with 688 channels in all
    "body_params": 269_072,
    "bn_layers": 19,
    "bn_channels": 688,
    # the paper's 8 tasks (image size, classes), batch 128; GFLOP of one inner step (forward + backward), from
    # the 975 GFLOP per 8-task meta-step of shared/reference/performance-anchors.md, shared out by pixels
    "tasks": [(64, 100), (64, 100), (32, 100), (84, 120), (84, 100), (84, 200), (28, 10), (32, 10)],
    "batch": 128,
    # measured on one H200, eager fp32 (performance-anchors.md): 8 tasks at native sizes 117 ms (975 GFLOP),
    # 8 tasks at 32 px 62 ms (248 GFLOP) => one task step = 5.4 ms + 0.0757 ms per GFLOP
    "ms_fixed": (62 - 248 * 55 / 727) / 8,
    "ms_per_gflop": 55 / 727,
}
RESNET50 = {
    # torchvision's ResNet-50 without its 1000-class head: 25,557,032 - 2,049,000 parameters;
    # 53 BatchNorm layers with 26,560 channels in all
    "body_params": 23_508_032,
    "bn_layers": 53,
    "bn_channels": 26_560,
    "batch": 256,
    "image_size": 224,
    # an assumption: training throughput of one GPU at 224 px in bf16 at a full batch, and a fixed cost per
    # inner step (kernel launches and small-batch inefficiency) that a smaller slice does not remove
    "ms_fixed": 5.0,
}


# ----------------------------------------------------------------------------------------------- model
def alpha_s(n: int) -> float:
    nodes = -(-n // NETWORK["gpus_per_node"])
    a = NETWORK["alpha_us"]
    return 1e-6 * (a["intra_node"] if nodes == 1 else a["2-8 nodes"] if nodes <= 8 else a["64 nodes"])


def t_allreduce(nbytes: float, n: int) -> float:
    if n <= 1:
        return 0.0
    busbw = NETWORK["busbw_intra_node_gb_s" if n <= NETWORK["gpus_per_node"] else "busbw_inter_node_gb_s"]
    return alpha_s(n) + 2 * (n - 1) / n * nbytes / (busbw * 1e9)


def project(model: dict, task_ms: list[float], world: int, head_params: int) -> dict:
    tasks = len(task_ms)
    g = world // tasks if world > tasks else 1
    if g == 1:  # round-robin: the slowest rank runs its tasks one after the other
        compute = max(sum(task_ms[r::world]) for r in range(min(world, tasks)))
    else:  # the slowest task on 1/G of its batch: the fixed cost stays
        compute = max(model["ms_fixed"] + (t - model["ms_fixed"]) / g for t in task_ms)
    phi_bytes = 4 * model["body_params"] + 4
    theta_bytes = 4 * (model["body_params"] + head_params) + 4
    meta = t_allreduce(phi_bytes, world)
    grads = t_allreduce(theta_bytes, g) if g > 1 else 0.0
    bn_bytes = 8 * model["bn_channels"] / model["bn_layers"]
    bn = 2 * model["bn_layers"] * t_allreduce(bn_bytes, g) if g > 1 else 0.0
    total = compute / 1e3 + meta + grads + bn
    one_gpu = sum(task_ms) / 1e3
    return {
        "world": world,
        "ranks_per_task": g,
        "images_per_gpu": model["batch"] // g,
        "compute_ms": round(compute, 2),
        "meta_allreduce_ms": round(1e3 * meta, 3),
        "task_gradient_allreduce_ms": round(1e3 * grads, 3),
        "batchnorm_sync_ms": round(1e3 * bn, 3),
        "meta_step_ms": round(1e3 * total, 2),
        "speedup_vs_1_gpu": round(one_gpu / total, 1),
        "efficiency": round(one_gpu / total / world, 3),
        "efficiency_with_sync_batchnorm_false": round(one_gpu / (total - bn) / world, 3),
        "bytes_per_meta_step_per_rank": {
            "meta_gradient": phi_bytes,
            "task_gradients": theta_bytes if g > 1 else 0,
            "batchnorm": 2 * 8 * model["bn_channels"] if g > 1 else 0,
        },
    }


def resnet20_suite() -> dict:
    m = RESNET20
    gflop32 = 975 / sum((px / 32) ** 2 for px, _ in m["tasks"])
    task_ms = [m["ms_fixed"] + m["ms_per_gflop"] * gflop32 * (px / 32) ** 2 for px, _ in m["tasks"]]
    head = max(64 * c + c for _, c in m["tasks"])
    return {
        "setting": "the paper's 8 tasks at native sizes, ResNet-20, batch 128, eager fp32 (compute measured "
        "on an H200)",
        "task_step_ms_on_one_gpu": [round(t, 1) for t in task_ms],
        "projections": [project(m, task_ms, w, head) for w in (8, 64, 512)],
    }


def resnet50(tasks: int, images_per_s: float) -> dict:
    m = dict(RESNET50)
    full = m["ms_fixed"] + 1e3 * m["batch"] / images_per_s
    head = 2048 * 100 + 100
    return {
        "setting": f"{tasks} tasks at 224 px, ResNet-50 body, batch {m['batch']}, "
        f"{images_per_s:g} images/s per GPU (bf16, assumed)",
        "task_step_ms_on_one_gpu": round(full, 1),
        "projections": [project(m, [full] * tasks, w, head) for w in (8, 64, 512)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resnet50-images-per-s", type=float, default=3000.0)
    args = parser.parse_args()
    report = {
        "network": NETWORK,
        "resnet20_paper_suite": resnet20_suite(),
        "resnet50_8_tasks": resnet50(8, args.resnet50_images_per_s),
        "resnet50_32_tasks": resnet50(32, args.resnet50_images_per_s),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
