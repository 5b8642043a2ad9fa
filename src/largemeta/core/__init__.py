"""The algorithm core: parameters as dicts, inner optimizers, meta-gradients, the algorithm table, and the
loop's two halves — the controller that moves φ and the runner that takes the tasks' inner steps."""

from largemeta.core.algorithms import ALGORITHMS, Algorithm
from largemeta.core.controller import MetaController, Schedule, mean_over_all_tasks
from largemeta.core.diagnostics import ShiftErrorProbe
from largemeta.core.engine import MetaLearner
from largemeta.core.inner import INNER_OPTIMIZERS, SGD, Adam
from largemeta.core.metagrad import (
    FOMAML,
    IMAML,
    META_GRADIENTS,
    Leap,
    MetaGradient,
    PreStepFOMAML,
    Reptile,
    Task,
    conjugate_gradient,
)
from largemeta.core.params import Params
from largemeta.core.runner import Executor, TaskRunner, inner_step, loop_gradients, loss_and_gradients

__all__ = [
    "ALGORITHMS",
    "FOMAML",
    "IMAML",
    "INNER_OPTIMIZERS",
    "META_GRADIENTS",
    "SGD",
    "Adam",
    "Algorithm",
    "Executor",
    "Leap",
    "MetaController",
    "MetaGradient",
    "MetaLearner",
    "Params",
    "PreStepFOMAML",
    "Reptile",
    "Schedule",
    "ShiftErrorProbe",
    "Task",
    "TaskRunner",
    "conjugate_gradient",
    "inner_step",
    "loop_gradients",
    "loss_and_gradients",
    "mean_over_all_tasks",
]
