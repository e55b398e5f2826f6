"""Bench datasets: ``DATASETS`` maps each name to its :class:`DatasetSpec` subclass."""

from __future__ import annotations

from ._base import BenchError, Data, DatasetSpec, Metric, MissingDataError, Split
from .census import Census, CensusEdu
from .images import MultiDigits, MultiFashion, MultiFashionMNIST, MultiMNIST
from .qm9 import QM9, QM9Raw
from .scenes import Scenes
from .synthetic import Synthetic
from .table import TableDataset

__all__ = ["DATASETS", "DEFAULT_DATASET", "get_dataset", "BenchError", "MissingDataError", "Data", "DatasetSpec",
           "Metric", "Split", "TableDataset"]  # fmt: skip

_ALL: tuple[type[DatasetSpec], ...] = (MultiDigits, Synthetic, MultiFashion, MultiMNIST, MultiFashionMNIST,
                                       QM9, QM9Raw, Census, CensusEdu, Scenes)  # fmt: skip
DATASETS: dict[str, type[DatasetSpec]] = {cls.name: cls for cls in _ALL}
DEFAULT_DATASET = "multidigits"


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def get_dataset(name: str) -> type[DatasetSpec]:
    """The dataset class for ``name`` or an alias; a one-line :class:`BenchError` otherwise."""
    k = _key(name)
    for cls in _ALL:
        if k == _key(cls.name) or k in {_key(a) for a in cls.aliases}:
            return cls
    raise BenchError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)} (see `awloss bench --list`)")
