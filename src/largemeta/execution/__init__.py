"""Fast paths for the per-step task loop, each tested against the plain loop.

* executors (:mod:`largemeta.execution.executors`): how one inner step's gradients of every task are computed
  — ``loop``, ``channels_last``, ``autocast`` (bf16), ``channels_last+autocast``, ``batched`` (vmap over
  same-shaped tasks); by name from :data:`EXECUTORS`;
* :class:`~largemeta.execution.cuda_graph.CudaGraphMetaStep`: the whole meta-step as one CUDA graph (the
  ``cuda_graph`` choice of the trainer's ``executor`` key: the loop executor, captured).
"""

from largemeta.core.runner import Executor, loop_gradients
from largemeta.execution.cuda_graph import CudaGraphMetaStep, check_graphable
from largemeta.execution.executors import Autocast, Batched, ChannelsLast
from largemeta.registry import Registry

EXECUTORS: Registry = Registry("executor")
"""Executor factories by name: ``EXECUTORS.create("channels_last+autocast")`` returns a fresh executor."""
EXECUTORS.add("loop", lambda: loop_gradients)
EXECUTORS.add("channels_last", ChannelsLast)
EXECUTORS.add("autocast", Autocast)
EXECUTORS.add("channels_last+autocast", lambda: Autocast(inner=ChannelsLast()))
EXECUTORS.add("batched", Batched)

GRAPH = "cuda_graph"
"""The trainer's ``executor`` choice that captures the loop's whole meta-step in a CUDA graph."""
STEP_CHOICES = (*EXECUTORS.names(), GRAPH)
"""Every valid value of the trainer's ``executor`` key."""

__all__ = [
    "EXECUTORS",
    "GRAPH",
    "STEP_CHOICES",
    "Autocast",
    "Batched",
    "ChannelsLast",
    "CudaGraphMetaStep",
    "Executor",
    "check_graphable",
    "loop_gradients",
]
