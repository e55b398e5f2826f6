"""``ScaleInvariant``: the sum of log-losses (the "SI" baseline of Navon et al. 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._registry import register
from ._helpers import PositiveLossWeighting

__all__ = ["ScaleInvariant"]


@register
class ScaleInvariant(PositiveLossWeighting):
    r"""Scale-invariant scalarisation: the sum of the log-losses, each weight :math:`1/L_i`.

    Multiplying a task's loss by a constant adds a constant to the objective and leaves the gradient
    unchanged, so no task dominates because of its units. It is also the analytic optimum of
    uncertainty weighting: Kendall's weights at equilibrium are :math:`1/(2L_i)`, half of these.

    .. math::

        \mathcal{L} = \sum_{i=1}^{T} \log(L_i + \varepsilon), \qquad w_i = \frac{1}{L_i + \varepsilon}

    where:

    - :math:`L_i` is task *i*'s loss, which must be :math:`> 0` when :math:`\varepsilon = 0`;
    - :math:`\varepsilon \ge 0` is an optional shift (``eps``).

    Args:
        num_tasks: expected number of tasks, or ``None`` (default) to accept any count.
        eps: shift added to every loss before the log, ``>= 0``. Default 0 (the paper's formula); with 0,
            a loss ``<= 0`` raises an error instead of giving ``-inf``.
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> si = awloss.ScaleInvariant()
        >>> si(torch.tensor(0.5), torch.tensor(4.0))  # log 0.5 + log 4 = log 2
        tensor(0.6931)
        >>> si.weights
        tensor([2.0000, 0.2500])

    References:
        A. Navon et al., Multi-Task Learning as a Bargaining Game, ICML 2022, https://arxiv.org/abs/2202.01017
        (baseline "SI", Sec. 6).

    Note:
        Nash-MTL's code takes ``log`` of the raw loss with no guard; we raise a clear error on a loss
        ``<= 0`` (or shift by ``eps``) instead of returning ``-inf``/NaN. Float16/bfloat16 losses are weighed
        in float32 (the objective and :attr:`weights` are float32), since :math:`1/L` overflows float16 for
        :math:`L < 1.5\times10^{-5}`; the gradient :math:`1/L` reaching such a float16 loss still cannot be
        represented in float16, so upcast tiny half-precision losses (``loss.float()``) first.
    """

    name = "si"
    aliases = ("scale_invariant", "log_sum")
    positive_reason = "it takes log L"
    absent_by_subset = True  # no per-task state: a task given as None is simply left out

    def forward(self, losses: Tensor) -> Tensor:
        losses = losses.to(self._weight_dtype(losses))  # float16/bfloat16: weights and objective in float32
        shifted = losses + self.eps if self.eps else losses
        self._set_weights(torch.reciprocal(shifted.detach()))
        return torch.log(shifted).sum()
