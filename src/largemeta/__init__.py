"""largemeta: large-scale meta-learning with Continual Trajectory Shifting (CTS).

The algorithm core lives in :mod:`largemeta.core`; the paper's 2-D benchmark in
:mod:`largemeta.synthetic`; the command line in :mod:`largemeta.cli`.
"""

__version__ = "0.1.0"
