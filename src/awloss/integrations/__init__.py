"""Leaves awloss plugs into: Lightning (:mod:`.lightning`) and logging (:mod:`.loggers`).

DDP/FSDP support is core: :mod:`awloss.distributed` (``awloss.integrations.distributed`` is kept as an alias).

The heavy optional dependencies (lightning, tensorboard) are imported only when used.
"""
