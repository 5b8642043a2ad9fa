"""Acquisition, the middle room of the data layer: where a dataset's files come from (:mod:`.sources`:
registry clients, URLs) and how they are parsed (:mod:`.formats`), the built-in datasets (:mod:`.packaged`,
:mod:`.vision`), bring-your-own folders and ``.npz`` files (:mod:`.byo`), and the ``DATASETS`` registry with
``load_dataset`` (:mod:`.datasets`), where acquisition meets storage. It builds on :mod:`largemeta.data.store`
and never imports the task side.

The public names are re-exported by :mod:`largemeta.data`; this face re-exports nothing.
"""
