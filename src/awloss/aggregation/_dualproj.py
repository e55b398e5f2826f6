"""DualProj: project the mean gradient onto the dual cone of the task gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._base import GramianAggregator
from ._upgrad import dual_cone_weights

__all__ = ["DualProj"]


@register
class DualProj(GramianAggregator):
    r"""Projection of the average gradient onto the dual cone of the task gradients.

    The closest vector to the mean gradient that conflicts with no task (the GEM projection applied to
    multi-task learning). One QP, solved on the device by an active-set method.

    .. math::
        w = \arg\min_{w \ge \frac1T\mathbb 1} \tfrac12 w^\top G w, \qquad d = w^\top J

    where:
        - :math:`G` is the trace-normalised Gramian plus ``reg·I``.

    Args:
        reg: ridge added to the trace-normalised Gramian, ``>= 0``; default ``1e-8``. TorchJD uses ``1e-4``
            (quadprog needs a clearly positive definite matrix); pass ``reg=1e-4`` to reproduce its numbers.
            The ridge weakens the no-conflict guarantee to ``⟨d, g_i⟩ >= -reg·tr(G)·w_i``.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("dualproj")
        >>> agg(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
        tensor([0.0000, 0.5000])

    References:
        Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017 (Eq. 11).
        Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232, 2024.

    Note:
        TorchJD solves the QP with quadprog on the CPU with a ``1e-4`` ridge; we solve it in torch on the
        device, where a ``1e-8`` ridge suffices (``reg=1e-4`` reproduces TorchJD's numbers). An uncertified
        solve falls back to the mean gradient's weights ``1/T`` (counted in ``solver_fallbacks``).
    """

    name = "dualproj"
    conflict_free = True

    def __init__(self, reg: float = 1e-8) -> None:
        super().__init__()
        self.reg = check_positive("reg", reg, strict=False)

    masked_rows = True

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T, present = gramian.shape[0], self._present()
        if present is None:
            U = torch.full((1, T), 1.0 / T, dtype=gramian.dtype, device=gramian.device)
        else:  # a zero row has no preference and a void constraint: its dual variable stays 0
            p = present.to(gramian.dtype)
            U = (p / p.sum().clamp_min(1.0))[None]
        W, ok = dual_cone_weights(gramian, U, self.reg)
        return self._certified(W[0], ok, U[0], "the dual-cone projection QP")

    def extra_repr(self) -> str:
        return f"reg={self.reg}"
