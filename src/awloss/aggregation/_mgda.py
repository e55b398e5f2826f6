"""MGDA: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._base import GramianAggregator
from ._solvers import min_norm_simplex

__all__ = ["MGDA"]


@register
class MGDA(GramianAggregator):
    r"""Multiple-gradient descent: the min-norm element of the convex hull of the task gradients.

    The update is a common descent direction for every task (``⟨d, g_i⟩ >= ‖d‖²``), and is zero at a
    Pareto-stationary point. The weights depend on the Gramian only; ``T = 2`` has a closed form, larger
    ``T`` is solved exactly on device by an active-set method on the dual problem.

    .. math::
        w = \arg\min_{w \in \Delta_T} \Big\|\sum_i w_i g_i\Big\|^2 = \arg\min_{w \in \Delta_T} w^\top G w,
        \qquad d = \sum_i w_i g_i

    where:
        - :math:`\Delta_T = \{w \ge 0, \sum_i w_i = 1\}` is the probability simplex;
        - :math:`G = JJ^\top` is the Gramian of the task gradients :math:`g_i`.

    Args:
        normalize: ``"none"`` (default, the paper) or ``"l2"``: divide each gradient by its norm before
            solving (Sener & Koltun's ``l2`` gradient normalisation); the weights then apply to the raw rows.
        reg: ridge ``reg · tr(G)/T`` added to the trace-normalised Gramian; keeps the dual bounded when
            0 lies in the hull. ``> 0``, default ``1e-8``.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("mgda")
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([0.8000, 0.4000])
        >>> agg.weights
        tensor([0.8000, 0.2000])

    References:
        Désidéri, "Multiple-gradient descent algorithm (MGDA)", C. R. Math. 350, 2012.
        Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.

    Note:
        The paper (and TorchJD, LibMTL) runs Frank-Wolfe for a fixed number of iterations with Python
        branches; we solve the QP exactly (to round-off) with a batched Lawson-Hanson active set in torch,
        so the result is the true min-norm point and no host synchronisation is needed on accelerators.
        Should the solver fail to certify its answer, the mean gradient's weights ``1/T`` are used
        (counted in ``solver_fallbacks``). A task whose gradient is exactly 0 (absent) is left out.
    """

    name = "mgda"
    conflict_free = True

    def __init__(self, normalize: str = "none", reg: float = 1e-8) -> None:
        super().__init__()
        if normalize not in ("none", "l2"):
            raise ValueError(f"Parameter `normalize` must be 'none' or 'l2', got {normalize!r}.")
        self.normalize = normalize
        self.reg = check_positive("reg", reg)

    masked_rows = True

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        G = gramian
        if self.normalize == "l2":
            d = gramian.diagonal().clamp_min(0).sqrt()
            inv = (1.0 / d).nan_to_num(0.0, posinf=0.0)
            G = gramian * inv[:, None] * inv[None, :]
        present = self._present()
        w, ok = min_norm_simplex(G, reg=self.reg, present=present)
        if present is None:
            safe = torch.full_like(w, 1.0 / w.shape[0])
        else:  # uniform over the non-zero rows
            safe = present.to(w.dtype)
            safe = safe / safe.sum().clamp_min(1.0)
        w = self._certified(w, ok, safe, "the min-norm solver")
        if self.normalize == "l2":
            w = w * inv.to(w.dtype)
        return w

    def extra_repr(self) -> str:
        return f"normalize={self.normalize!r}, reg={self.reg}"
