"""largemeta: large-scale meta-learning with Continual Trajectory Shifting (CTS).

The algorithm core lives in :mod:`largemeta.core`; the paper's 2-D benchmark in
:mod:`largemeta.synthetic`; the command line in :mod:`largemeta.cli`; the drop-in for your own training loop,
:class:`largemeta.ContinualTrajectoryShifting`, in :mod:`largemeta.api`.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that ``import largemeta`` (and the CLI's start-up) does not import torch.
    if name == "ContinualTrajectoryShifting":
        from largemeta.api import ContinualTrajectoryShifting

        return ContinualTrajectoryShifting
    raise AttributeError(f"module 'largemeta' has no attribute {name!r}")
