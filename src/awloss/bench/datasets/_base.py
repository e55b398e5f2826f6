"""What every bench dataset provides: splits as tensors, per-task losses, metrics and a model."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["BenchError", "MissingDataError", "Metric", "Split", "Data", "DatasetSpec", "cache_dir", "pkg_dir"]


class BenchError(Exception):
    """A user-facing error of ``awloss bench``: printed as one line, exit status 2."""


class MissingDataError(BenchError):
    """The data (or the package that ships it) is not on this machine; the message says how to get it."""


def cache_dir(*parts: str) -> Path:
    """``$AWLOSS_CACHE`` (default ``~/.cache/awloss``) joined with ``parts``; created on demand."""
    root = Path(os.environ.get("AWLOSS_CACHE") or Path.home() / ".cache" / "awloss")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def pkg_dir(module: str, install: str) -> Path:
    """Folder of an installed package, found *without importing it* (some import broken dependencies)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(f"package `{module}` is not installed; install with: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def require(module: str, install: str) -> Any:
    """Import an optional dependency or raise a one-line :class:`MissingDataError` naming the install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDataError(f"package `{module}` is not installed; install with: {install}") from None


@dataclass(frozen=True)
class Metric:
    """One evaluation metric of one task. ``higher_is_better`` sets its sign in Δm%."""

    name: str
    task: str
    higher_is_better: bool
    unit: str = ""


@dataclass
class Split:
    """Inputs and one target tensor per task (first dimension = samples)."""

    x: Tensor
    y: list[Tensor]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: Tensor) -> Split:
        return Split(self.x[idx], [t[idx] for t in self.y])


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    info: dict[str, Any] = field(default_factory=dict)


class DatasetSpec:
    """Base of a bench dataset. Subclasses set the class attributes and implement the four methods."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""  # where the data comes from / how it gets onto the machine
    install: ClassVar[str] = ""  # the one-line install hint, "" when nothing is needed
    tasks: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    quick: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    # -- to implement -------------------------------------------------------------------------------
    def load(self) -> Data:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_model(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def metrics(self) -> list[Metric]:  # pragma: no cover - abstract
        raise NotImplementedError

    def task_losses(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> list[Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    def evaluate(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> dict[str, float]:
        raise NotImplementedError  # pragma: no cover - abstract

    # -- shared helpers ------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Hash of the dataset name and configuration (keys the cached STL baselines)."""
        blob = json.dumps({"dataset": self.name, **self.config}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @staticmethod
    def subsample(split: Split, size: int | None, seed: int = 0) -> Split:
        if size is None or size >= len(split):
            return split
        g = torch.Generator().manual_seed(seed)
        return split.take(torch.randperm(len(split), generator=g)[: int(size)])

    def apply_sizes(self, data: Data) -> Data:
        c = self.config
        data.train = self.subsample(data.train, c.get("train_size"), 1)
        data.val = self.subsample(data.val, c.get("val_size"), 2)
        data.test = self.subsample(data.test, c.get("test_size"), 3)
        data.info.update(n_train=len(data.train), n_val=len(data.val), n_test=len(data.test))
        return data


Loader = Callable[[dict[str, Any]], Data]
