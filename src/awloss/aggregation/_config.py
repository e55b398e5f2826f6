"""ConFIG: the conflict-free direction with equal cosine to every task gradient."""

from __future__ import annotations

import torch
from torch import Tensor

from .._registry import register
from ._base import GramianAggregator
from ._solvers import work_dtype

__all__ = ["ConFIG"]


@register
class ConFIG(GramianAggregator):
    r"""Conflict-free inverse gradients.

    The direction :math:`\hat d` solves :math:`U\hat d = \mathbb 1` for the unit task gradients
    :math:`U` (least-norm solution), so it has the same positive cosine with every task; its length is
    the sum of the projections of the raw gradients onto it. Computed from the Gramian: :math:`\hat d`
    lies in the row space of :math:`J`.

    .. math::
        \hat d = U^{+}\mathbb 1,\qquad d = \Big(\sum_i g_i^\top \frac{\hat d}{\|\hat d\|}\Big)\frac{\hat d}{\|\hat d\|}
        = w^\top J,\quad w = \frac{\mathbb 1^\top D\,G_u G_u^{+}\mathbb 1}{\mathbb 1^\top G_u^{+}\mathbb 1}\, D^{-1} G_u^{+}\mathbb 1

    where:
        - :math:`D = \operatorname{diag}(\|g_i\|)`, :math:`U = D^{-1}J`, :math:`G_u = D^{-1} G D^{-1}`;
        - zero gradients get a zero unit row (and weight).

    Args:
        none: the method has no hyper-parameters.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("config")
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([1.5000, 1.5000])

    References:
        Liu, Chu, Thuerey et al., "ConFIG: Towards Conflict-free Training of Physics Informed Neural
        Networks", ICLR 2025 (arXiv:2408.11104).

    Note:
        The official code and TorchJD take the pseudo-inverse of the ``T x n`` unit matrix; we use the
        ``T x T`` Gramian (``eigh`` in float64), which is cheaper and gives the same vector up to
        round-off (pseudo-inverse cut-off ``T·ε`` relative to the largest eigenvalue).
    """

    name = "config"
    aliases = ("conflictfree",)

    masked_rows = True  # a zero row's weight is 0 without a mask (its row and column are 0): the base zeroes it

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T = gramian.shape[0]
        G = gramian.to(work_dtype(gramian))
        G = 0.5 * (G + G.T)
        norms = G.diagonal().clamp_min(0).sqrt()
        inv: Tensor = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
        Gu = G * inv[:, None] * inv[None, :]
        pinv = torch.linalg.pinv(Gu, hermitian=True, rtol=T * torch.finfo(gramian.dtype).eps)
        one = torch.ones(T, dtype=G.dtype, device=G.device)
        y = pinv @ one  # d̂ = Uᵀy
        dd = (one * y).sum().clamp_min(0)  # ‖d̂‖² = 1ᵀG_u⁺1
        length_times = (norms * (Gu @ y)).sum()  # Σ g_iᵀ d̂ = 1ᵀ D G_u y
        scale: Tensor = torch.where(dd > 0, length_times / torch.where(dd > 0, dd, 1.0), 0.0)
        w: Tensor = scale * inv * y
        return w
