"""PCGrad: project each task gradient away from the gradients it conflicts with."""

from __future__ import annotations

import torch
from torch import Tensor

from .._registry import register
from ._base import GramianAggregator
from ._solvers import visit_orders

__all__ = ["PCGrad", "pcgrad_weights"]


def pcgrad_weights(G: Tensor, order: Tensor) -> Tensor:
    """Row ``i`` of the result holds the coefficients of ``g_i^PC`` in the original gradients.

    ``order[i]`` is the order in which task ``i`` visits the others (``j == i`` is skipped). All tasks
    are processed together, one visit per step, so there are ``T`` vectorised steps instead of ``T²``.
    """
    T = G.shape[0]
    C = torch.eye(T, dtype=G.dtype, device=G.device)
    rows = torch.arange(T, device=G.device)
    diag = G.diagonal()
    for k in range(T):
        j = order[:, k]
        dot = (C * G[j]).sum(dim=1)  # ⟨g_i^PC, g_j⟩ = C[i] · G[:, j]
        gjj = diag[j]
        coef = torch.where((dot < 0) & (j != rows) & (gjj > 0), dot / torch.where(gjj > 0, gjj, 1.0), 0.0)
        C = C.index_put((rows, j), -coef, accumulate=True)
    return C


@register
class PCGrad(GramianAggregator):
    r"""Projecting conflicting gradients (gradient surgery).

    For each task, in a random order over the other tasks, the part of its (already projected)
    gradient that points against another task's gradient is removed; the projected gradients are then
    summed. Without conflicts (all ``⟨g_i, g_j⟩ >= 0``) it returns the plain sum.

    .. math::
        g_i^{PC} \leftarrow g_i^{PC} - \frac{\min(0, \langle g_i^{PC}, g_j\rangle)}{\|g_j\|^2}\, g_j
        \quad (j \ne i \text{ in random order}), \qquad d = \sum_i g_i^{PC}

    where:
        - :math:`g_i^{PC}` starts at :math:`g_i`; every step is a linear map, so :math:`d = w^\top J` with
          :math:`w` computed from the Gramian alone.

    Args:
        reduction: ``"sum"`` (default, Algorithm 1 of the paper) or ``"mean"`` of the projected gradients.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("pcgrad")
        >>> agg(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
        tensor([0.5000, 1.5000])
        >>> agg.weights
        tensor([2.0000, 1.5000])

    References:
        Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.

    Note:
        The official code loops over pairs in Python on flattened gradients; we run the same projections on
        the Gramian, all tasks at once (``T`` vectorised steps), on the device. The random orders come from
        the device's global generator (seed with ``torch.manual_seed``).
    """

    name = "pcgrad"
    permutation_equivariant = False

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"Parameter `reduction` must be 'sum' or 'mean', got {reduction!r}.")
        self.reduction = reduction

    masked_rows = True

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T = gramian.shape[0]
        present = self._present()
        order = visit_orders(T, present, gramian.device)
        w = pcgrad_weights(gramian, order).sum(dim=0)
        if present is not None:  # a zero row projects on nothing and nothing on it: drop its own row
            w = torch.where(present, w, torch.zeros_like(w))
            return w / present.sum().clamp_min(1).to(w.dtype) if self.reduction == "mean" else w
        return w / T if self.reduction == "mean" else w

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
