"""``UWSO``: soft optimal uncertainty weighting (Kirchdorfer et al., 2024)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from .. import _checks
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
        for every task. Zero losses raise an error (or use ``eps``) instead of an infinite logit. The
        temperature has the units of 1/loss, so the default 1 is one-hot when the smallest loss is well below 1
        (losses 0.1 and 1 give weights 0.9999 and 1e-4): a ``UserWarning`` says so (checked on the first call
        and every 1000th) and suggests a temperature. Weights are computed in at least float32.
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
        d = losses.detach().to(self._weight_dtype(losses))  # 1/L of a float16 loss < 1.5e-5 overflows
        if self.eps:
            d = d + self.eps
        w = torch.softmax((1.0 / self.temperature) / d, dim=0)  # (1/L) / T in one op
        self._set_weights(w)
        if not torch.compiler.is_compiling():
            calls = self.__dict__.get("_calls_seen", 0) + 1
            self.__dict__["_calls_seen"] = calls
            if (calls == 1 or calls % 1000 == 0) and not self.__dict__.get("_warned_one_hot") and w.shape[0] > 1:
                if _checks.host_reads_are_free(w):  # CPU: a free host read, the warning within this call
                    self._warn_if_one_hot(w, d)
                else:  # an accelerator (or meta): a device flag, read with the deferred checks (next call)
                    _checks.push(self, w.max() <= 0.99, lambda m: m._warn_if_one_hot(w, d), "deferred")
        return torch.dot(w, losses.to(w.dtype))

    def _warn_if_one_hot(self, w: Tensor, d: Tensor) -> None:
        top = float(w.max())
        if top > 0.99:
            self.__dict__["_warned_one_hot"] = True
            lo = float(d.min())
            warnings.warn(
                f"UWSO(temperature={self.temperature}) puts {top:.4f} of the weight on one task (smallest loss "
                f"{lo:.3g}): the logits 1/(L*T) differ by far more than 1, so the other tasks barely train. The "
                f"temperature has the units of 1/loss; try about 1/min(L), e.g. `temperature={1.0 / lo:.3g}`.",
                UserWarning,
                stacklevel=6,  # the user's `uwso(...)` call
            )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
