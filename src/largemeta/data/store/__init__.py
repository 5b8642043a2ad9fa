"""Storage, the bottom room of the data layer: the cache folder and its atomic files (:mod:`.cache`), what a
dataset is in memory (:mod:`.arrays`: ``ArrayDataset``), the cache format of converted datasets
(:mod:`.store`) and the listings of bring-your-own folders (:mod:`.index`). It imports nothing else of
``largemeta.data``.

The public names are re-exported by :mod:`largemeta.data`; this face re-exports nothing.
"""
