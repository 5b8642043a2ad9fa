"""Run folders and results folders: what they hold, who may write them, and reading back what they record.

* :mod:`~largemeta.runs.names`: the file names of a run folder and a results folder.
* :mod:`~largemeta.runs.claim`: taking a folder for one command (checked, then locked) — every command that
  writes uses it.
* :mod:`~largemeta.runs.folder`: a run's identity, its config copy and its metrics log.
* :mod:`~largemeta.runs.checkpoint`: what a run's checkpoint holds, read back in either format.
* :mod:`~largemeta.runs.results`: reading a ``results.json``.

This package sits below both the trainer and the meta-test protocol.
"""
