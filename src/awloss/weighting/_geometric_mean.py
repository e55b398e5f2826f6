"""``GeometricMean``: the geometric mean of the task losses (GLS, Chennupati et al. 2019)."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._registry import register
from ._helpers import PositiveLossWeighting

__all__ = ["GeometricMean"]


@register
class GeometricMean(PositiveLossWeighting):
    r"""Geometric loss strategy (GLS): the geometric mean of the task losses.

    Like :class:`ScaleInvariant`, the gradient direction does not depend on the scale of any one loss;
    the step size follows the geometric mean. Computed as :math:`\exp(\tfrac1T\sum\log L_i)`, which does
    not overflow or underflow for many tasks as a product would.

    .. math::

        \mathcal{L} = \Big(\prod_{i=1}^{T} L_i\Big)^{1/T}, \qquad w_i = \frac{\mathcal{L}}{T\,L_i}

    where:

    - :math:`L_i` is task *i*'s loss (shifted by ``eps``), which must be :math:`> 0`;
    - :math:`T` is the number of tasks.

    Args:
        num_tasks: expected number of tasks, or ``None`` (default) to accept any count.
        eps: shift added to every loss, ``>= 0``. Default 0; with 0, a loss ``<= 0`` raises an error.
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> gls = awloss.GeometricMean()
        >>> gls(torch.tensor(1.0), torch.tensor(4.0))  # sqrt(1 * 4)
        tensor(2.)
        >>> gls.weights
        tensor([1.0000, 0.2500])

    References:
        S. Chennupati, G. Sistu, S. Yogamani, S. Rawashdeh, MultiNet++: Multi-Stream Feature Aggregation
        and Geometric Loss Strategy for Multi-Task Learning, CVPR Workshops 2019,
        https://arxiv.org/abs/1904.08492 (Eq. 2).

    Note:
        LibMTL computes ``prod(L) ** (1/T)`` directly (overflows/underflows for many tasks); we use the
        log-domain form, equal in exact arithmetic.
    """

    name = "gls"
    aliases = ("geometric_mean", "geometric")
    positive_reason = "it takes the geometric mean"
    absent_by_subset = True  # no per-task state: a task given as None is simply left out

    @property
    def _fused_check(self) -> bool:  # type: ignore[override]
        return self.eps == 0.0  # mean(log L) is -inf/NaN for a loss <= 0 or NaN: the check (with eps: the base's)

    def forward(self, losses: Tensor) -> Tensor:
        dtype = self._weight_dtype(losses)  # float16/bfloat16: weights and objective in float32
        if losses.dtype != dtype:
            losses = losses.to(dtype)
        if torch.compiler.is_compiling():  # plain ops: the compiler fuses them
            shifted = losses + self.eps if self.eps else losses
            out = torch.exp(torch.log(shifted).mean())
            self._set_weights(out.detach() / (shifted.shape[0] * shifted.detach()))
            return out
        # (torch leaves Function.apply unannotated)
        fused = _GeometricMeanObjective.apply(losses, self.eps)  # type: ignore[no-untyped-call]
        out, w, log_mean = cast("tuple[Tensor, Tensor, Tensor]", fused)
        if self.eps == 0.0:
            self._push_flag(log_mean, losses)  # deferred check
        self._set_weights(w)
        return out


class _GeometricMeanObjective(torch.autograd.Function):
    """``(exp(mean log L), w = out/(T L), mean log L)`` in one node: ``∂out/∂L = w``."""

    @staticmethod
    def forward(ctx: Any, losses: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        x = losses + eps if eps else losses
        log_mean = torch.log(x).mean()
        out = torch.exp(log_mean)
        w = torch.div(out, x).mul_(1.0 / x.shape[0])
        ctx.save_for_backward(w)
        ctx.mark_non_differentiable(w, log_mean)
        ctx.set_materialize_grads(False)
        return out, w, log_mean

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad: Tensor | None, _grad_w: Tensor | None, _grad_log_mean: Tensor | None
    ) -> tuple[Tensor | None, None]:
        if grad is None:
            return None, None
        (w,) = ctx.saved_tensors
        return w * grad, None
