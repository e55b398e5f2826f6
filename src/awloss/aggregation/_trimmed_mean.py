"""TrimmedMean: the coordinate-wise trimmed mean of the task gradients (Byzantine-robust averaging)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._checks import host_reads_are_free
from .._inputs import check_int
from .._registry import register
from ._base import Aggregator

__all__ = ["TrimmedMean"]


@register
class TrimmedMean(Aggregator):
    r"""Coordinate-wise trimmed mean: per coordinate, drop the ``trim_number`` largest and smallest values.

    A robust alternative to the mean gradient: a few tasks (or workers) with outlying gradients cannot pull
    any coordinate of the update further than the remaining values. With ``trim_number = 0`` it is the
    mean gradient. The update is not a combination of the rows (``weighted = False``).

    .. math::
        d_k = \frac{1}{T - 2b} \sum_{i=b+1}^{T-b} J_{(i),k}

    where:
        - :math:`J_{(1),k} \le \dots \le J_{(T),k}` are the entries of column :math:`k` sorted;
        - :math:`b` is ``trim_number``; the Jacobian needs at least :math:`2b + 1` rows;
        - all-zero rows (tasks absent from the batch) are left out: :math:`T` counts the present rows, and
          fewer are trimmed (:math:`\lfloor (T-1)/2 \rfloor`) when too few are present: the update is the
          one ``TrimmedMean`` gives the present rows alone (with ``trim_number`` lowered to what they allow;
          a ``UserWarning``, once per instance, says so where reading the count is free, on the CPU).

    Args:
        trim_number: how many of the largest and of the smallest values to drop per coordinate, an int
            ``>= 0`` (``2·trim_number`` values are dropped). No default in TorchJD; ours is ``1``.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("trimmed_mean", trim_number=1)
        >>> agg(torch.tensor([[1.0, -5.0], [2.0, 0.0], [100.0, 1.0]]))
        tensor([2., 0.])

    References:
        Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
        Rates", ICML 2018, https://proceedings.mlr.press/v80/yin18a.html (the coordinate-wise trimmed mean).

    Note:
        Same computation as TorchJD's ``TrimmedMean`` (a sort along the task axis), except that all-zero rows
        (absent tasks) are left out rather than counted as values 0 (TorchJD counts them).
    """

    name = "trimmed_mean"
    aliases = ("trimmedmean",)
    weighted = False
    zero_rows = "own"  # all-zero rows (absent tasks) are left out by its own mask: T counts the present rows

    def __init__(self, trim_number: int = 1) -> None:
        super().__init__()
        self.trim_number = check_int("trim_number", trim_number, minimum=0)

    @classmethod
    def _make_example(cls, num_tasks: int) -> TrimmedMean:
        return cls(trim_number=1 if num_tasks >= 3 else 0)

    def forward(self, jacobian: Tensor) -> Tensor:
        T, b = jacobian.shape[0], self.trim_number
        if T < 2 * b + 1:
            raise ValueError(
                f"Parameter `trim_number` = {b} needs at least {2 * b + 1} rows (2 * trim_number + 1), "
                f"got a Jacobian with {T}."
            )
        present = jacobian.abs().amax(dim=1) > 0  # an all-zero row (absent task) is left out
        m = present.sum()
        k = torch.minimum(torch.full_like(m, b), ((m - 1) // 2).clamp_min(0))  # trim fewer if few are present
        if b and host_reads_are_free(m) and not self.__dict__.get("_fewer_warned") and int(m) < 2 * b + 1:
            self._fewer_warned = True
            warnings.warn(
                f"TrimmedMean: {int(m)} of {T} tasks present (the others absent or with a zero gradient); "
                f"trimming {int(k)} values per side instead of trim_number = {b}, which needs {2 * b + 1} "
                "(warned once).", UserWarning, stacklevel=4)
        big = torch.finfo(jacobian.dtype).max
        keyed = torch.where(present[:, None], jacobian, torch.full_like(jacobian, big))
        ordered, _ = torch.sort(keyed, dim=0)  # absent rows sort last
        pos = torch.arange(T, device=jacobian.device)[:, None]
        keep = (pos >= k) & (pos < m - k)
        total = torch.where(keep, ordered, torch.zeros_like(ordered)).sum(dim=0)
        return total / (m - 2 * k).clamp_min(1).to(jacobian.dtype)

    def extra_repr(self) -> str:
        return f"trim_number={self.trim_number}"
