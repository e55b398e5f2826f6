"""UPGrad: project every task gradient onto the dual cone of all of them, then average."""

from __future__ import annotations

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._base import GramianAggregator
from ._solvers import nnqp, normalize_gramian

__all__ = ["UPGrad", "dual_cone_weights"]


def dual_cone_weights(G: Tensor, U: Tensor, reg: float) -> tuple[Tensor, Tensor]:
    """For each row ``u`` of ``U``, the weights of the projection of ``uᵀJ`` onto the dual cone of ``J``.

    The projection is ``wᵀJ`` with ``w = argmin_{w >= u} ½ wᵀGw`` (the dual of the projection QP);
    with ``w = u + x`` this is the non-negative QP ``min_{x >= 0} ½xᵀGx + (Gu)ᵀx`` solved by
    :func:`~awloss.aggregation._solvers.nnqp`, all rows at once. ``G`` is trace-normalised plus
    ``reg·I`` (TorchJD's convention, which keeps rank-deficient systems well posed).
    """
    A = normalize_gramian(G, reg)
    U = U.to(A.dtype)
    x, ok = nnqp(A, U @ A)
    return U + x, ok.all()


@register
class UPGrad(GramianAggregator):
    r"""Unconflicting projection of gradients (Jacobian descent).

    Each task gradient is projected onto the dual cone of all task gradients (the directions that
    increase no loss), and the projections are averaged. The update never conflicts with any task
    (``⟨d, g_i⟩ >= 0``), is the mean gradient when nothing conflicts, and scales linearly with the
    gradients. All ``T`` projections are solved together on the device.

    .. math::
        w^{(i)} = \arg\min_{w \ge p_i e_i} \tfrac12 w^\top G w, \qquad d = \Big(\sum_i w^{(i)}\Big)^\top J

    where:
        - :math:`p = \tfrac1T\mathbb 1` are the task preferences and :math:`e_i` the unit vectors;
        - :math:`G` is the trace-normalised Gramian plus ``reg·I``.

    Args:
        reg: ridge added to the trace-normalised Gramian, ``>= 0``; default ``1e-8``. TorchJD uses ``1e-4``
            (quadprog needs a clearly positive definite matrix); pass ``reg=1e-4`` to reproduce its numbers.
            The ridge weakens the no-conflict guarantee to ``⟨d, g_i⟩ >= -reg·tr(G)·w_i``.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("upgrad")
        >>> agg(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
        tensor([0.2500, 0.7500])

    References:
        Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232, 2024.

    Note:
        TorchJD solves the ``T`` QPs one by one with quadprog in float64 on the CPU; we solve them as one
        batched Lawson-Hanson active set in torch, with the same normalisation and ridge, so the weights
        agree with TorchJD's to solver precision. An uncertified solve falls back to the mean gradient's
        weights ``1/T`` (counted in ``solver_fallbacks``).
    """

    name = "upgrad"
    conflict_free = True

    def __init__(self, reg: float = 1e-8) -> None:
        super().__init__()
        self.reg = check_positive("reg", reg, strict=False)

    masked_rows = True

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T, present = gramian.shape[0], self._present()
        if present is None:
            U = torch.eye(T, dtype=gramian.dtype, device=gramian.device) / T
        else:  # a zero row has no preference and a void constraint: its dual variables stay 0
            p = present.to(gramian.dtype)
            U = torch.diag(p / p.sum().clamp_min(1.0))
        W, ok = dual_cone_weights(gramian, U, self.reg)
        return self._certified(W.sum(dim=0), ok, U.sum(dim=0), "the dual-cone projection QP")

    def extra_repr(self) -> str:
        return f"reg={self.reg}"
