"""CAGrad: the update that maximises the worst task improvement near the average gradient."""

from __future__ import annotations

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._base import GramianAggregator
from ._solvers import cagrad_dual

__all__ = ["CAGrad"]


@register
class CAGrad(GramianAggregator):
    r"""Conflict-averse gradient descent.

    Within a ball of radius :math:`c\|g_0\|` around the average gradient :math:`g_0`, CAGrad picks the
    direction that maximises the smallest first-order improvement of any task. ``c = 0`` is plain
    averaging; large ``c`` approaches MGDA. The dual is solved exactly on device by a homotopy over
    the simplex weights.

    .. math::
        w^\star = \arg\min_{w \in \Delta_T} g_w^\top g_0 + \sqrt{\phi}\,\|g_w\|, \qquad
        d = \frac{1}{1 + c^2 \cdot \mathbb{1}[\text{rescale}]}\Big(g_0 + \frac{\sqrt{\phi}}{\|g_{w^\star}\|} g_{w^\star}\Big)

    where:
        - :math:`g_0 = \frac{1}{T}\sum_i g_i`, :math:`g_w = \sum_i w_i g_i`, :math:`\phi = c^2\|g_0\|^2`;
        - :math:`\Delta_T` is the probability simplex.

    Args:
        c: radius factor, ``>= 0``; paper default ``0.4`` (the NYUv2/Cityscapes setting; 0.5 in its MT10
            experiments).
        rescale: divide the update by ``1 + c²`` as the official code's default ``rescale=1`` does
            (default ``True``); ``False`` gives the paper's Algorithm 1 (and TorchJD's) direction.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("cagrad", c=0.4, rescale=False)
        >>> agg(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
        tensor([0.2000, 0.5000])

    References:
        Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021.

    Note:
        The official code calls ``scipy.optimize.minimize`` (SLSQP) on the CPU every step and TorchJD calls
        cvxpy/Clarabel; we follow the piecewise-linear solution path of the dual in torch (exact up to
        round-off, no host round trip). The official code's ``rescale`` default is kept. An uncertified
        solve falls back to the mean gradient's weights ``1/T`` (counted in ``solver_fallbacks``).
        A zero row of the Jacobian (an absent task) is left out of the solve on the CPU only, where finding
        it is a free host read; on accelerators and under ``torch.compile`` it is kept (it counts in ``g₀``
        and in the simplex), so there the answer with an absent task is not the ``T - 1`` task one. Its
        solver has no masked form yet (the other Gramian methods leave zero rows out on every device).
    """

    name = "cagrad"

    def __init__(self, c: float = 0.4, rescale: bool = True) -> None:
        super().__init__()
        self.c = check_positive("c", c, strict=False)
        self.rescale = bool(rescale)

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        w, ok = cagrad_dual(gramian, self.c)
        w = self._certified(w, ok, torch.full_like(w, 1.0 / w.shape[0]), "the CAGrad dual solver")
        return w / (1.0 + self.c**2) if self.rescale else w

    def extra_repr(self) -> str:
        return f"c={self.c}, rescale={self.rescale}"
