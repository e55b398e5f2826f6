"""What every bench dataset provides: splits as tensors, per-task losses, metrics and a model."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["BenchError", "MissingDataError", "Metric", "Split", "Data", "DatasetSpec", "cache_dir", "pkg_dir",
           "atomic_write_text", "atomic_savez", "read_json_cache", "read_npz_cache"]


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


def _note(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then ``os.replace`` it (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_savez(path: Path, *, compressed: bool = False, **arrays: Any) -> None:
    """``numpy.savez`` through a temporary file and ``os.replace``."""
    import numpy as np

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_json_cache(path: Path) -> Any | None:
    """A cached JSON entry, or ``None`` when absent; a corrupt entry is named on stderr, removed and ``None``."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        _note(f"  ignoring corrupt cache entry {path} ({type(e).__name__}); rebuilding it")
        path.unlink(missing_ok=True)
        return None


def read_npz_cache(path: Path, keys: Sequence[str]) -> list[Any] | None:
    """Arrays ``keys`` of a cached ``.npz``, or ``None`` when absent or corrupt (named on stderr, removed)."""
    if not path.is_file():
        return None
    import numpy as np

    try:
        with np.load(path) as f:
            return [f[k] for k in keys]
    except Exception as e:  # noqa: BLE001 - a truncated zip raises BadZipFile, EOFError, ValueError, KeyError …
        _note(f"  ignoring corrupt cache entry {path} ({type(e).__name__}); rebuilding it")
        path.unlink(missing_ok=True)
        return None


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
    """The protocol of a bench dataset: its splits, per-task losses, metrics and a model.

    A subclass sets ``name`` and ``tasks`` (one name per task, in the order of the model's outputs) and
    implements five methods:

    * ``load() -> Data``: the train / validation / test :class:`Split` s (inputs ``x``, one target tensor
      per task in ``y``), built deterministically (the same data for every run);
    * ``build_model() -> nn.Module``: called after ``torch.manual_seed(seed)``; its ``forward(x)`` returns
      one prediction per task and its ``.shared`` attribute holds the trunk shared by the tasks
      (:class:`awloss.bench.models.MTLModel` does both);
    * ``task_losses(preds, targets) -> list[Tensor]``: one scalar training loss per task;
    * ``metrics() -> list[Metric]``: the evaluation metrics, each tied to a task, with its direction;
    * ``evaluate(preds, targets) -> dict[str, float]``: the value of every metric on a whole split.

    ``defaults`` (``epochs``, ``batch_size``, ``lr`` and dataset options) and ``quick`` (the smoke test)
    are optional; ``options`` lists extra ``--data-args`` keys besides those. ``config`` holds the options
    of this instance; :meth:`fingerprint` hashes it to key the caches, so it must describe the data.
    A plug-in (``awloss bench --dataset package.module:factory``) is a function returning an instance.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from awloss.bench import Data, DatasetSpec, Metric, Split
        >>> from awloss.bench.models import mlp_model
        >>> class TwoSines(DatasetSpec):
        ...     name, tasks = "two-sines", ("sin", "cos")
        ...     defaults = {"epochs": 2, "batch_size": 32, "lr": 1e-2}
        ...     def load(self):
        ...         def split(n, seed):
        ...             x = torch.rand(n, 1, generator=torch.Generator().manual_seed(seed)) * 6
        ...             return Split(x, [torch.sin(x), torch.cos(x)])
        ...         return Data(split(128, 0), split(64, 1), split(64, 2))
        ...     def build_model(self):
        ...         return mlp_model(1, (16,), (), [1, 1])
        ...     def task_losses(self, preds, targets):
        ...         return [nn.functional.mse_loss(p, y) for p, y in zip(preds, targets)]
        ...     def metrics(self):
        ...         return [Metric("mae_sin", "sin", False), Metric("mae_cos", "cos", False)]
        ...     def evaluate(self, preds, targets):
        ...         return {f"mae_{t}": float((p - y).abs().mean()) for t, p, y in zip(self.tasks, preds, targets)}
        >>> len(TwoSines({}).load().train)
        128
    """

    name: str = ""  # (an instance may name itself: TableSpec is "table-<file>")
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""  # where the data comes from / how it gets onto the machine
    install: ClassVar[str] = ""  # the one-line install hint, "" when nothing is needed
    tasks: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    quick: ClassVar[dict[str, Any]] = {}
    options: ClassVar[dict[str, Any]] = {}  # extra --data-args keys and an example value of the right type

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config or {})

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """One-line :class:`BenchError` for an unknown ``--data-args`` key or a value of the wrong type."""
        known = {**cls.quick, **cls.defaults, **cls.options, "train_size": 1, "val_size": 1, "test_size": 1}
        for key, value in options.items():
            if key not in known:
                raise BenchError(f"--data-args: unknown key {key!r} for dataset {cls.name!r}; "
                                 f"known: {', '.join(sorted(known))}")  # fmt: skip
            ref = known[key]
            if isinstance(ref, bool) or not isinstance(ref, (int, float)):
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if isinstance(ref, int) and not (number and float(value).is_integer() and value >= 1):
                raise BenchError(f"--data-args: {key} must be an integer >= 1, got {value!r}")
            if not number or value < 0:
                raise BenchError(f"--data-args: {key} must be a finite number >= 0, got {value!r}")

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
