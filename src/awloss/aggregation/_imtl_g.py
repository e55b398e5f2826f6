"""IMTL-G: the combination whose projections onto every task direction are equal."""

from __future__ import annotations

import torch
from torch import Tensor

from .._registry import register
from ._base import GramianAggregator
from ._solvers import work_dtype

__all__ = ["IMTLG"]


@register
class IMTLG(GramianAggregator):
    r"""Impartial multi-task learning, gradient part (closed form).

    Finds weights summing to one such that the update has the same projection onto every task's unit
    gradient, so no task dominates the shared update. The pseudo-inverse makes it defined for linearly
    dependent gradients.

    .. math::
        v = G^{+} \sqrt{\operatorname{diag}(G)}, \qquad w = \frac{v}{\mathbb{1}^\top v}, \qquad d = w^\top J

    where:
        - :math:`G = JJ^\top` is the Gramian and :math:`G^{+}` its pseudo-inverse;
        - :math:`w = 0` when :math:`|\mathbb{1}^\top v| < 10^{-12}`.

    Args:
        none: the method has no hyper-parameters.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("imtl_g")
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([0.6667, 0.6667])

    References:
        Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021.
        Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (the pseudo-inverse form).

    Note:
        The paper inverts ``D Uᵀ`` (``torch.inverse`` in LibMTL), which fails for dependent gradients; we
        use the Gramian pseudo-inverse like TorchJD, computed by ``eigh`` in float64 on the device.
    """

    name = "imtl_g"
    aliases = ("imtlg",)

    masked_rows = True  # a zero row's weight is 0 without a mask (its row and column are 0): the base zeroes it

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        G = gramian.to(work_dtype(gramian))
        G = 0.5 * (G + G.T)
        scale = G.diagonal().max().clamp_min(torch.finfo(G.dtype).tiny)
        d = (G.diagonal() / scale).clamp_min(0).sqrt()  # scale-free: the 1e-12 test on s below is absolute
        v = torch.linalg.pinv(G / scale, hermitian=True, rtol=G.shape[0] * torch.finfo(gramian.dtype).eps) @ d
        s = v.sum()
        return torch.where(s.abs() < 1e-12, torch.zeros_like(v), v / torch.where(s.abs() < 1e-12, 1.0, s))
