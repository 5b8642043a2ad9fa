"""Results files of every kind, as the commands write them, with chosen accuracies (no training): for the
report's tests."""

from __future__ import annotations

import json
from pathlib import Path

TARGETS = ("t1", "t2", "t3")
ENVIRONMENT = {
    "largemeta": "0.2.0",
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "torch": "2.13.0+cpu",
    "device": "recorded-device-xyz",
    "python": "3.12.0",
    "argv": ["largemeta", "demo"],
}


def meta_test(level: float, seeds: int = 2, steps: int = 10, train_size=None, name="x") -> dict:
    """A meta-test result: target ``i``, seed ``s`` scores ``level + 0.01 i + 0.002 s`` (fractions)."""
    tasks = {}
    for i, t in enumerate(TARGETS):
        per_seed = [level + 0.01 * i + 0.002 * s for s in range(seeds)]
        mean = sum(per_seed) / seeds
        tasks[t] = {"mean_accuracy": mean, "ci95": 0.01, "per_seed": per_seed, "curve": {str(steps): mean}}
    overall = sum(t["mean_accuracy"] for t in tasks.values()) / len(tasks)
    return {
        "init": name,
        "steps": steps,
        "seeds": seeds,
        "train_size": train_size,
        "tasks": tasks,
        "mean_accuracy": overall,
    }


def protocol(**more) -> dict:
    return {
        "meta_training_steps": 10,
        "train_seeds": [0],
        "targets": list(TARGETS),
        "fine_tuning_steps": 10,
        "fine_tuning_seeds": 2,
        "batch_size": 8,
        "train_size": None,
        **more,
    }


def _write(folder: Path, result: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(result))
    return folder


LEVELS = {"cts": 0.30, "reptile": 0.25, "leap": 0.29, "scratch": 0.20}


def convergence(folder: Path, command: str = "experiment convergence", recorded: bool = True) -> Path:
    result = {
        "experiment": "convergence",
        "request": {"command": command},
        "milestones": [5, 10],
        "config": {"algo": "cts", "steps": 10},
        "algorithms": {
            a: {
                "accuracy": {"5": meta_test(level - 0.02), "10": meta_test(level)},
                "loss": [{"step": 5, "mean_loss": 2.0}, {"step": 10, "mean_loss": 1.5}],
                # as an experiment records them: φ's meta-updates at each milestone (CTS: every step; K = 5)
                **(
                    {"meta_updates": {"5": 5, "10": 10} if a == "cts" else {"5": 1, "10": 2}}
                    if a != "scratch"
                    else {}
                ),
            }
            for a, level in LEVELS.items()
        },
    }
    if recorded:
        result.update(environment=ENVIRONMENT, protocol=protocol(milestones=[5, 10]))
    return _write(folder, result)


def k_ablation(folder: Path) -> Path:
    result = {
        "experiment": "k-ablation",
        "request": {"command": "experiment k-ablation"},
        "ks": [2, 4],
        "config": {"steps": 10},
        "algorithms": {
            a: {"2": meta_test(LEVELS[a]), "4": meta_test(LEVELS[a] + 0.01)} for a in ("cts", "reptile")
        },
        "environment": ENVIRONMENT,
        "protocol": protocol(),
    }
    return _write(folder, result)


def tune(folder: Path) -> Path:
    result = {
        "experiment": "tune",
        "request": {"command": "experiment tune"},
        "betas": [0.01, 1.0],
        "config": {"steps": 10},
        "validation": {"cts": {"0.01": 0.4, "1": 0.3}, "reptile": {"0.01": 0.35, "1": 0.38}},
        "best": {"cts": "0.01", "reptile": "1"},
        "test": {"cts": meta_test(0.30), "reptile": meta_test(0.27), "scratch": meta_test(0.20)},
        "environment": ENVIRONMENT,
        "protocol": protocol(betas=[0.01, 1.0]),
    }
    return _write(folder, result)


def pretrained(folder: Path) -> Path:
    result = {
        "experiment": "pretrained",
        "request": {"command": "experiment pretrained"},
        "init": "phi.safetensors",
        "sizes": [8, 16],
        "config": {"steps": 10},
        "algorithms": {
            "finetune": {"8": meta_test(0.2, train_size=8), "16": meta_test(0.3, train_size=16)},
            "cts": {"8": meta_test(0.25, train_size=8), "16": meta_test(0.31, train_size=16)},
        },
        "environment": ENVIRONMENT,
        "protocol": protocol(train_size=[8, 16]),
    }
    return _write(folder, result)


def evaluate(folder: Path) -> Path:
    return _write(folder, {**meta_test(0.3), "environment": ENVIRONMENT, "protocol": protocol()})


def evaluate_sizes(folder: Path) -> Path:
    result = {
        "init": "run",
        "by_train_size": {"35": meta_test(0.2, train_size=35), "70": meta_test(0.25, train_size=70)},
        "environment": ENVIRONMENT,
        "protocol": protocol(train_size=[35, 70]),
    }
    return _write(folder, result)


KINDS = {
    "convergence": convergence,
    "demo": lambda folder: convergence(folder, command="demo"),
    "k-ablation": k_ablation,
    "tune": tune,
    "pretrained": pretrained,
    "evaluate": evaluate,
    "evaluate-sizes": evaluate_sizes,
}
"""Each kind of results folder a report renders, by a name."""
