"""``Sum``: linear scalarisation with unit weights (equal weighting, EW / LS)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._registry import register
from ._base import Weighting, _constant_weights

__all__ = ["Sum"]


@register
class Sum(Weighting):
    r"""Plain sum of the task losses (equal weighting, "EW" / linear scalarisation "LS").

    The baseline every other method is measured against: each task gets weight 1, so the update is
    the gradient of the summed loss. It has no state and accepts any number of tasks unless
    ``num_tasks`` is given.

    .. math::

        \mathcal{L} = \sum_{i=1}^{T} L_i

    where:

    - :math:`L_i` is task *i*'s loss and :math:`T` the number of tasks;
    - every weight :math:`w_i = 1`.

    Args:
        num_tasks: expected number of tasks, or ``None`` (default) to accept any count.
        task_names: optional task names (mapping inputs are read in this order).

    Example:
        >>> import torch, awloss
        >>> ew = awloss.Sum()
        >>> ew(torch.tensor(1.0), torch.tensor(2.5))
        tensor(3.5000)
        >>> ew.weights
        tensor([1., 1.])

    References:
        Equal weighting as used by LibMTL ("EW") and Nash-MTL ("LS"); S. Ruder, An Overview of Multi-Task
        Learning in Deep Neural Networks, arXiv 1706.05098 (2017).

    Note:
        LibMTL's EW docstring says weight 1/T but its code uses weight 1; we use 1 (``Mean`` gives 1/T).
    """

    name = "sum"
    aliases = ("ew", "ls", "equal")

    def __init__(self, num_tasks: int | None = None, *, task_names: Sequence[str] | None = None) -> None:
        super().__init__(num_tasks, task_names=task_names)

    def _initial_weights(self) -> Tensor | None:
        return None if self.num_tasks is None else torch.ones(self.num_tasks)

    def forward(self, losses: Tensor) -> Tensor:
        self._set_weights(_constant_weights(self, losses, 1.0))
        return losses.sum()
