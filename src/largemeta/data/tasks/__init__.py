"""The task side, the top room of the data layer: suites and task recipes (:mod:`.tasks`), a task's seeded
draws (:mod:`.sampler`), augmentation (:mod:`.augment`), a task's images on the device (:mod:`.images`) or
streamed from disk (:mod:`.stream`), and the loader that resolves the placement (:mod:`.loader`). It loads
datasets through :mod:`largemeta.data.sources.datasets` and reads storage (:mod:`largemeta.data.store`).

The public names are re-exported by :mod:`largemeta.data`; this face re-exports nothing.
"""
