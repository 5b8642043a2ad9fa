"""The algorithm core: parameters as dicts, inner optimizers, meta-gradients, the one meta-learning loop."""

from largemeta.core.diagnostics import ShiftErrorProbe
from largemeta.core.engine import ALGORITHMS, MetaLearner, Schedule, algorithm
from largemeta.core.inner import SGD, Adam, make_inner_optimizer
from largemeta.core.metagrad import FOMAML, IMAML, Leap, MetaGradient, Reptile, Task, conjugate_gradient
from largemeta.core.params import Params

__all__ = [
    "ALGORITHMS", "FOMAML", "IMAML", "SGD", "Adam", "Leap", "MetaGradient", "MetaLearner", "Params",
    "Reptile", "Schedule", "ShiftErrorProbe", "Task", "algorithm", "conjugate_gradient", "make_inner_optimizer",
]
