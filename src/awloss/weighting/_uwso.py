"""``UWSO``: soft optimal uncertainty weighting (Kirchdorfer et al., 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._helpers import PositiveLossWeighting

__all__ = ["UWSO"]


@register
class UWSO(PositiveLossWeighting):
    r"""UW-SO: uncertainty weighting at its analytic optimum, softened by a tempered softmax.

    Minimising the uncertainty-weighting objective over :math:`\sigma_i` in closed form gives weights
    proportional to :math:`1/L_i` (UW-O, the :class:`ScaleInvariant` weights), reached at once instead of
    after many steps of a learned :math:`\sigma`. UW-SO passes these inverse losses through a softmax
    with temperature :math:`T_\text{emp}`, which bounds the weights and sums them to 1. No learnable
    parameters and no state: the weights are recomputed from the current (detached) losses.

    .. math::

        w_i = \operatorname{softmax}\Big(\frac{1/\mathrm{sg}[L_i]}{T_\text{emp}}\Big)_i, \qquad
        \mathcal{L} = \sum_i w_i L_i

    where:

    - :math:`L_i` is task *i*'s loss (shifted by ``eps``), which must be :math:`> 0`;
    - :math:`\mathrm{sg}` is stop-gradient: the weights are constants for the backward pass;
    - :math:`T_\text{emp} > 0` is the temperature: small values follow :math:`1/L` sharply (toward the
      smallest loss), large values approach equal weights :math:`1/T`.

    Args:
        num_tasks: expected number of tasks, or ``None`` (default) to accept any count.
        temperature: :math:`T_\text{emp}`, ``> 0``. Default 1; the paper tunes it per dataset.
        eps: shift added to each loss inside :math:`1/L`, ``>= 0``. Default 0 (a loss ``<= 0`` raises).
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> uwso = awloss.UWSO(temperature=1.0)
        >>> total = uwso(torch.tensor(0.5), torch.tensor(1.0))
        >>> uwso.weights  # softmax([2, 1])
        tensor([0.7311, 0.2689])

    References:
        C. Kirchdorfer, J. Elich, M. Kugler, B. Yang, Analytical Uncertainty-Based Loss Weighting in
        Multi-Task Learning, GCPR 2024, https://arxiv.org/abs/2408.07985 (UW-O and UW-SO).

    Note:
        The paper's closed-form :math:`\sigma` differs by loss type (L1, L2, cross-entropy) by constant
        factors that the softmax does not remove; we use the :math:`1/L` form of the paper's UW-SO equation
        for every task. Zero losses raise an error (or use ``eps``) instead of an infinite logit.
    """

    name = "uwso"
    aliases = ("uw_so", "soft_optimal_uncertainty")
    positive_reason = "its weights are softmax(1/L)"
    absent_by_subset = True  # no per-task state: a task given as None is simply left out

    def __init__(
        self,
        num_tasks: int | None = None,
        *,
        temperature: float = 1.0,
        eps: float = 0.0,
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_tasks, eps=eps, task_names=task_names)
        self.temperature = check_positive("temperature", temperature)

    def forward(self, losses: Tensor) -> Tensor:
        d = losses.detach()
        if self.eps:
            d = d + self.eps
        w = torch.softmax((1.0 / self.temperature) / d, dim=0)  # (1/L) / T in one op
        self._set_weights(w)
        return torch.dot(w, losses)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
