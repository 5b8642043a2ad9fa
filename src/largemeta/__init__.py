"""largemeta: large-scale meta-learning with Continual Trajectory Shifting (CTS).

The algorithm core lives in :mod:`largemeta.core`; the paper's 2-D benchmark in
:mod:`largemeta.synthetic`; the command line in :mod:`largemeta.cli`; the drop-in for your own training loop,
:class:`largemeta.ContinualTrajectoryShifting`, in :mod:`largemeta.api`. φ trained by either is read back with
:func:`largemeta.load_phi` and put into a model with :func:`largemeta.load_phi_into` (:mod:`largemeta.phi`).
"""

from largemeta._version import __version__ as __version__

__all__ = ["ContinualTrajectoryShifting", "load_phi", "load_phi_into"]
"""The public names, exported lazily (below)."""


def __getattr__(name: str):
    # Lazy, so that ``import largemeta`` (and the CLI's start-up) does not import torch.
    if name == "ContinualTrajectoryShifting":
        from largemeta.api import ContinualTrajectoryShifting

        return ContinualTrajectoryShifting
    if name in ("load_phi", "load_phi_into"):
        from largemeta import phi

        return getattr(phi, name)
    raise AttributeError(f"module 'largemeta' has no attribute {name!r}")
