"""The uncertainty-weighting objective as plain ops and as one fused autograd node."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


def _uw_objective(s: Tensor, losses: Tensor, factor: Tensor, log1p: bool, mask: bool) -> tuple[Tensor, Tensor]:
    """Reference implementation with plain ops: ``(Σ c e^{-s} L + r(s), w)``, masked tasks frozen."""
    if mask:
        active = losses != 0
        s_data = torch.where(active, s, s.detach())
    else:
        s_data = s
    w = factor * torch.exp(-s_data)
    reg = F.softplus(s) if log1p else 0.5 * s
    if mask:
        reg = reg * active
    return (w * losses + reg).sum(), w.detach()


class _UWObjective(torch.autograd.Function):
    """Fused forward/backward of :func:`_uw_objective` (same values and gradients, fewer autograd nodes)."""

    @staticmethod
    def forward(ctx, s, losses, factor, log1p, mask):  # type: ignore[no-untyped-def, override]
        w = torch.exp(-s).mul_(factor)
        reg = F.softplus(s) if log1p else s * 0.5
        active = losses != 0 if mask else None
        if active is not None:
            reg = reg * active
        ctx.save_for_backward(s, losses, w, active)
        ctx.log1p = log1p
        ctx.mark_non_differentiable(w)
        return torch.dot(w, losses) + reg.sum(), w

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_w):  # type: ignore[no-untyped-def, override]
        s, losses, w, active = ctx.saved_tensors
        grad_s = grad_l = None
        if ctx.needs_input_grad[0]:
            wl = w * losses
            grad_s = (torch.sigmoid(s).sub_(wl) if ctx.log1p else wl.neg_().add_(0.5)).mul_(grad)
            if active is not None:
                grad_s.mul_(active)
        if ctx.needs_input_grad[1]:
            grad_l = w * grad
        return grad_s, grad_l, None, None, None
