"""Engines awloss runs under: DDP (:mod:`.distributed`), Lightning (:mod:`.lightning`), logging (:mod:`.loggers`).

The heavy optional dependencies (lightning, tensorboard) are imported only when used.
"""
