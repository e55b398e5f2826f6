"""``Mean``: the average of the task losses, each weight 1/T."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._registry import register
from ._base import Weighting, _constant_weights

__all__ = ["Mean"]


@register
class Mean(Weighting):
    r"""Average of the task losses: equal weights :math:`1/T`.

    Identical in direction to :class:`Sum`, scaled by :math:`1/T`, so the learning rate does not have to
    change with the number of tasks. No state; accepts any number of tasks unless ``num_tasks`` is given.

    .. math::

        \mathcal{L} = \frac{1}{T}\sum_{i=1}^{T} L_i

    where:

    - :math:`L_i` is task *i*'s loss and :math:`T` the number of tasks;
    - every weight :math:`w_i = 1/T`.

    Args:
        num_tasks: expected number of tasks, or ``None`` (default) to accept any count.
        task_names: optional task names (mapping inputs are read in this order).

    Example:
        >>> import torch, awloss
        >>> mean = awloss.Mean()
        >>> mean([torch.tensor(1.0), torch.tensor(2.0), torch.tensor(6.0)])
        tensor(3.)
        >>> mean.weights
        tensor([0.3333, 0.3333, 0.3333])

    References:
        TorchJD's ``Mean`` scalarizer; the "EW" docstring of LibMTL (arXiv 2203.14338).

    Note:
        No deviation: this is the arithmetic mean.
    """

    name = "mean"
    absent_by_subset = True  # no per-task state: a task given as None is simply left out

    def __init__(self, num_tasks: int | None = None, *, task_names: Sequence[str] | None = None) -> None:
        super().__init__(num_tasks, task_names=task_names)

    def _initial_weights(self) -> Tensor | None:
        return None if self.num_tasks is None else torch.full((self.num_tasks,), 1.0 / self.num_tasks)

    def forward(self, losses: Tensor) -> Tensor:
        self._set_weights(_constant_weights(self, losses, 1.0 / losses.shape[0]))
        return losses.mean()
