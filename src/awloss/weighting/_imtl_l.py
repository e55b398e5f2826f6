"""``IMTLL``: the loss-balance half of Impartial Multi-Task Learning (Liu et al., ICLR 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .._registry import register
from ._base import Weighting
from ._helpers import as_weight_vector

__all__ = ["IMTLL"]


@register
class IMTLL(Weighting):
    r"""IMTL-L: learned scales that make every weighted loss equal to 1.

    Each task gets a learned log-scale :math:`s_i`; minimising over :math:`s_i` pushes
    :math:`e^{s_i}L_i` toward 1, so at equilibrium every task contributes the same scaled loss and the
    weights are :math:`1/L_i` (the :class:`ScaleInvariant` weights). The :math:`s_i` must be optimised
    with the network (see :meth:`param_groups`). A task whose loss is exactly 0 (or absent, ``None``)
    keeps its weight but does not move its :math:`s_i`, which would otherwise grow without bound.

    .. math::

        \mathcal{L} = \sum_{i=1}^{T} e^{s_i} L_i - s_i, \qquad w_i = e^{s_i}

    where:

    - :math:`L_i` is task *i*'s loss (must be :math:`\ge 0`);
    - :math:`s_i` is the learned log-scale of task *i* (:attr:`log_scale`), 0 at init.

    Args:
        num_tasks: number of tasks, ``>= 1``.
        init: initial :math:`s`, a float or one per task. Default 0 (weights 1), as in the paper.
        mask_zero_losses: if ``True`` (default), a task whose loss is exactly 0 does not update its
            :math:`s_i` and contributes no :math:`-s_i` term.
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> imtl = awloss.IMTLL(2)
        >>> imtl(torch.tensor(2.0), torch.tensor(0.5))  # e^0 * 2 - 0 + e^0 * 0.5 - 0
        tensor(2.5000, grad_fn=<_IMTLObjectiveBackward>)
        >>> imtl.weights
        tensor([1., 1.])

    References:
        L. Liu et al., Towards Impartial Multi-task Learning, ICLR 2021,
        https://openreview.net/forum?id=IMPnRXEWpvr (Sec. 3.2, loss balance, IMTL-L).

    Note:
        LibMTL implements IMTL as a hybrid of IMTL-L and the gradient method IMTL-G; this is IMTL-L alone
        (the gradient half is the aggregator ``"imtl_g"``). The zero-loss mask is ours.
    """

    name = "imtl_l"
    aliases = ("imtll",)
    learnable = True
    stateful = True
    requires_nonnegative = True
    _fused_check = True  # the fused objective is NaN/inf for a NaN, inf or negative loss: it is the check
    init: Tensor  # buffer (registered in __init__)
    log_scale: nn.Parameter

    def __init__(
        self,
        num_tasks: int,
        *,
        init: float | Sequence[float] = 0.0,
        mask_zero_losses: bool = True,
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_tasks, task_names=task_names)
        init_t = as_weight_vector("init", init, self.num_tasks)
        self.mask_zero_losses = bool(mask_zero_losses)
        self.register_buffer("init", init_t, persistent=False)
        self.log_scale = nn.Parameter(init_t.clone())

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.log_scale.copy_(self.init)

    def _initial_weights(self) -> Tensor:
        return torch.exp(self.log_scale.detach())

    def forward(self, losses: Tensor) -> Tensor:
        s: Tensor = self.log_scale
        if s.dtype != losses.dtype:
            dtype = torch.promote_types(losses.dtype, s.dtype)
            s, losses = s.to(dtype), losses.to(dtype)
        present = self._present_mask(losses)
        if present is not None and not self.mask_zero_losses:  # an absent task never moves its s_i
            w = torch.exp(torch.where(present, s, s.detach()))
            out, w = (w * losses - s * present).sum(), w.detach()
        elif torch.compiler.is_compiling():  # plain ops: the compiler fuses them
            out, w = _imtl_objective(s, losses, self.mask_zero_losses)
        else:  # eager: one autograd node instead of five (8 ops, forward and backward, the check included)
            # (torch leaves Function.apply unannotated)
            out, w = _IMTLObjective.apply(s, losses, self.mask_zero_losses)  # type: ignore[no-untyped-call]
            self._push_flag(out.detach(), losses)  # deferred check: `out` is NaN/inf for a bad loss
        self._set_weights(w)
        return out

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}"


def _imtl_objective(s: Tensor, losses: Tensor, mask: bool) -> tuple[Tensor, Tensor]:
    """Reference with plain ops: ``(Σ e^{s}L - s, e^{s})``; a task with loss 0 leaves its ``s`` alone."""
    if mask:
        active = losses != 0
        w = torch.exp(torch.where(active, s, s.detach()))
        reg = torch.where(active, s, torch.zeros((), dtype=s.dtype, device=s.device))
    else:
        w, reg = torch.exp(s), s
    return (w * losses - reg).sum(), w.detach()


class _IMTLObjective(torch.autograd.Function):
    """Fused ``(Σ m(e^{s}L - s), e^{s})`` with ``m = L ** 1e-30`` (1 for ``L > 0``, 0 for ``L = 0``, NaN for a
    negative or NaN loss, which makes the objective NaN: the value check). ``∂/∂s = e^{s}L - m``, ``∂/∂L = e^{s}``."""

    @staticmethod
    def forward(ctx: Any, s: Tensor, losses: Tensor, mask: bool) -> tuple[Tensor, Tensor]:
        w = torch.exp(s)
        neg_m = (torch.pow(losses, 1e-30) if mask else torch.sqrt(losses).mul_(0.0).add_(1.0)).neg_()
        ctx.save_for_backward(losses, w, neg_m)
        ctx.mark_non_differentiable(w)
        ctx.set_materialize_grads(False)
        return torch.dot(torch.addcmul(s, w, losses, value=-1.0), neg_m), w

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor | None, _grad_w: Tensor | None) -> tuple[Tensor | None, ...]:
        losses, w, neg_m = ctx.saved_tensors
        grad_s = grad_l = None
        if grad is None:
            return None, None, None
        if ctx.needs_input_grad[0]:
            grad_s = torch.addcmul(neg_m, w, losses).mul_(grad)
        if ctx.needs_input_grad[1]:
            grad_l = w * grad
        return grad_s, grad_l, None
