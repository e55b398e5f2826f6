"""Logging per-task weights (and σ) without Lightning: CSV, TensorBoard (``awloss[tensorboard]``), any tracker.

Any experiment tracker plugs in through ``callback=``, a function called with each logged row and its step:

* Weights & Biases: ``WeightLogger(uw, callback=lambda row, step: wandb.log(row, step=step))``
* MLflow: ``WeightLogger(uw, callback=lambda row, step: mlflow.log_metrics(row, step=step))``

Example:
    >>> import torch, awloss
    >>> from awloss.integrations.loggers import weighting_scalars
    >>> uw = awloss.UncertaintyWeighting(2, task_names=["seg", "depth"])
    >>> _ = uw(torch.tensor(1.0), torch.tensor(2.0))
    >>> weighting_scalars(uw)
    {'weight/seg': 0.5, 'weight/depth': 0.5, 'sigma/seg': 1.0, 'sigma/depth': 1.0}
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["weighting_scalars", "WeightLogger"]


def _named(prefix: str, values: Tensor, names: Sequence[str] | None) -> dict[str, float]:
    vals = values.detach().float().cpu().reshape(-1).tolist()
    keys = list(names) if names is not None and len(names) == len(vals) else [str(i) for i in range(len(vals))]
    return {f"{prefix}/{k}": float(v) for k, v in zip(keys, vals)}


def weighting_scalars(
    weighting: Any = None, *, weights: Tensor | None = None, task_names: Sequence[str] | None = None
) -> dict[str, float]:
    """``{"weight/<task>": w_i, "sigma/<task>": σ_i}`` as Python floats (synchronises the device).

    Args:
        weighting: a loss-level method; its :attr:`weights`, :attr:`task_names` and (when it has one)
            ``sigma`` are read. ``None`` when only ``weights`` are given (e.g. from ``awloss.backward``).
        weights: explicit per-task weights, overriding the weighting's.
        task_names: names for the columns; default the weighting's names, else ``0, 1, …``.
    """
    names = task_names if task_names is not None else getattr(weighting, "task_names", None)
    out: dict[str, float] = {}
    if weights is None and weighting is not None:
        try:
            weights = weighting.weights
        except RuntimeError:  # no call yet and no initial weights
            weights = None
    if weights is not None:
        out.update(_named("weight", torch.as_tensor(weights), names))
    sigma = getattr(weighting, "sigma", None) if weighting is not None else None
    if isinstance(sigma, Tensor):
        out.update(_named("sigma", sigma, names))
    return out


class WeightLogger:
    """Write the per-task weights and σ of a weighting to a CSV file and/or TensorBoard.

    Call :meth:`log` once per step (after the weighting's call); rows are written every ``every`` steps.
    The CSV columns are fixed by the first row: ``step``, then ``weight/<task>``, ``sigma/<task>`` and any
    extra scalars passed to :meth:`log`.

    Args:
        weighting: the loss-level method to read (or ``None`` and pass ``weights=`` to :meth:`log`).
        csv_path: file to write (created, parent folders too); ``None`` for no CSV.
        tensorboard: a log directory or a ``SummaryWriter``; ``None`` for no TensorBoard. Needs the
            ``tensorboard`` package: ``pip install 'awloss[tensorboard]'``.
        every: log every ``every``-th call, ``>= 1``. Default 1.
        callback: a function, or a sequence of functions, called as ``callback(row, step)`` with each logged
            row (``{"weight/<task>": float, ...}``, extra scalars included) — the hook for W&B, MLflow or
            any other tracker. Default ``None``.

    Example:
        >>> import os, tempfile, torch, awloss
        >>> from awloss.integrations.loggers import WeightLogger
        >>> awl = awloss.AutomaticWeightedLoss(2)
        >>> path = os.path.join(tempfile.mkdtemp(), "weights.csv")
        >>> with WeightLogger(awl, csv_path=path) as logger:
        ...     _ = awl(torch.tensor(1.0), torch.tensor(3.0))
        ...     _ = logger.log(step=0, loss=4.0)
        >>> print(open(path).read().strip())
        step,weight/0,weight/1,sigma/0,sigma/1,loss
        0,0.5,0.5,1.0,1.0,4.0
    """

    def __init__(self, weighting: Any = None, *, csv_path: str | os.PathLike[str] | None = None,
                 tensorboard: Any = None, every: int = 1,
                 callback: Callable[[dict[str, float], int], Any] | Sequence[Callable[[dict[str, float], int], Any]]
                 | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Parameter `every` must be an int >= 1, got {every!r}.")
        self._callbacks = [] if callback is None else [callback] if callable(callback) else list(callback)
        for cb in self._callbacks:
            if not callable(cb):
                raise TypeError(f"Argument `callback` must be a callable or a sequence of callables, got {cb!r}.")
        if csv_path is None and tensorboard is None and not self._callbacks:
            raise ValueError("Give `csv_path`, `tensorboard` and/or `callback`: WeightLogger has nowhere to write.")
        self.weighting, self.every, self._calls = weighting, every, 0
        self._csv_path = None if csv_path is None else os.fspath(csv_path)
        self._file: Any = None
        self._writer: Any = None
        self._fields: list[str] | None = None
        self._tb = self._tensorboard(tensorboard)

    @staticmethod
    def _tensorboard(target: Any) -> Any:
        if target is None or hasattr(target, "add_scalar"):
            return target
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch's module needs the tensorboard package
            raise ImportError(
                "TensorBoard logging needs the tensorboard package; install with: pip install 'awloss[tensorboard]'"
            ) from e
        return SummaryWriter(log_dir=os.fspath(target))

    def log(self, step: int | None = None, *, weights: Tensor | None = None,
            task_names: Sequence[str] | None = None, **scalars: float) -> dict[str, float] | None:
        """Record one row (every ``every`` calls); returns the logged scalars, or ``None`` when skipped."""
        step = self._calls if step is None else int(step)
        self._calls += 1
        if (self._calls - 1) % self.every:
            return None
        row = weighting_scalars(self.weighting, weights=weights, task_names=task_names)
        row.update({k: float(v) for k, v in scalars.items()})
        if self._csv_path is not None:
            self._write_csv(step, row)
        if self._tb is not None:
            for k, v in row.items():
                self._tb.add_scalar(k, v, step)
        for cb in self._callbacks:
            cb(dict(row), step)
        return row

    def _write_csv(self, step: int, row: Mapping[str, float]) -> None:
        assert self._csv_path is not None  # only called with a CSV path
        if self._writer is None:
            folder = os.path.dirname(self._csv_path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            self._file = open(self._csv_path, "w", newline="")  # noqa: SIM115 - closed in close()
            self._fields = ["step", *row]
            self._writer = csv.DictWriter(self._file, fieldnames=self._fields)
            self._writer.writeheader()
        unknown = set(row) - set(self._fields or ())
        if unknown:
            raise ValueError(f"WeightLogger's CSV columns are fixed by the first row; got new keys {sorted(unknown)}.")
        self._writer.writerow({"step": step, **row})
        self._file.flush()

    def close(self) -> None:
        """Close the CSV file and flush TensorBoard."""
        if self._file is not None:
            self._file.close()
            self._file, self._writer = None, None
        if self._tb is not None and hasattr(self._tb, "flush"):
            self._tb.flush()

    def __enter__(self) -> WeightLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
