"""Checkpoint storage: named *entries* (nests of tensors, numbers and strings) written and read safely.

* :mod:`~largemeta.checkpoint.store`: the sharded store (``largemeta-sharded-checkpoint-v2``): every rank
  writes the entries it owns; a manifest with sha256 over every file is the commit point.
* :mod:`~largemeta.checkpoint.entries`: how an entry becomes tensors only, and back.
* :mod:`~largemeta.checkpoint.legacy`: the single file of version 0.1 (``largemeta-checkpoint-v1``), read and
  converted to the same entries.

What a *run's* checkpoint holds (its entry names, its ``info``) is :mod:`largemeta.runs.checkpoint`'s.
"""
