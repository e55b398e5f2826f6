"""``IMTLL``: the loss-balance half of Impartial Multi-Task Learning (Liu et al., ICLR 2021)."""

from __future__ import annotations

from collections.abc import Sequence

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
        dtype = torch.promote_types(losses.dtype, self.log_scale.dtype)
        s, losses = self.log_scale.to(dtype), losses.to(dtype)
        present = self._present_mask(losses)
        if present is not None and not self.mask_zero_losses:  # an absent task never moves its s_i
            w = torch.exp(torch.where(present, s, s.detach()))
            out, w = (w * losses - s * present).sum(), w.detach()
        elif torch.compiler.is_compiling():  # plain ops: the compiler fuses them
            out, w = _imtl_objective(s, losses, self.mask_zero_losses)
        else:  # eager: one autograd node instead of five
            out, w = _IMTLObjective.apply(s, losses, self.mask_zero_losses)
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
    """Same values and gradients as :func:`_imtl_objective` in one node: dL/ds = (e^s L - 1)·active."""

    @staticmethod
    def forward(ctx, s, losses, mask):  # type: ignore[no-untyped-def, override]
        w = torch.exp(s)
        active = losses != 0 if mask else None
        reg = s if active is None else s * active
        ctx.save_for_backward(losses, w, active)
        ctx.mark_non_differentiable(w)
        return torch.dot(w, losses) - reg.sum(), w

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_w):  # type: ignore[no-untyped-def, override]
        losses, w, active = ctx.saved_tensors
        grad_s = grad_l = None
        if ctx.needs_input_grad[0]:
            grad_s = (w * losses - 1) * grad
            if active is not None:
                grad_s = grad_s * active
        if ctx.needs_input_grad[1]:
            grad_l = w * grad
        return grad_s, grad_l, None
