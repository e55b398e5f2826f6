"""Aligned-MTL: align the principal components of the gradient system (condition number one)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._registry import register
from ._base import GramianAggregator
from ._solvers import work_dtype

__all__ = ["AlignedMTL"]


@register
class AlignedMTL(GramianAggregator):
    r"""Independent component alignment: whiten the gradient system, then rescale.

    The Gramian's eigen-decomposition gives a balance transform :math:`B` that makes the gradient
    system orthogonal with equal singular values (condition number 1), rescaled by the smallest (or
    median / mean) singular value; the weights are :math:`B` applied to the task preferences.
    Directions with eigenvalue below the numerical rank tolerance are dropped.

    .. math::
        G = V\Lambda V^\top,\qquad B = \sqrt{s}\; V_r \Lambda_r^{-1/2} V_r^\top,\qquad w = B\,\tfrac{1}{T}\mathbb{1}

    where:
        - :math:`r` indexes the eigenvalues above :math:`\lambda_{\max} T \varepsilon`;
        - :math:`s` is the smallest (``"min"``), median (``"median"``) or mean (``"rmse"``) kept eigenvalue.

    Args:
        scale_mode: ``"min"`` (default, the paper), ``"median"`` or ``"rmse"``.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("aligned_mtl")
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([0.5000, 0.5000])

    References:
        Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment for Multi-Task
        Learning", CVPR 2023.

    Note:
        The official code calls ``torch.symeig`` (removed from torch); we use ``eigh`` in float64 and mask
        the dropped eigen-directions instead of slicing them, so the rank never leaves the device.
    """

    name = "aligned_mtl"
    aliases = ("amtl",)

    def __init__(self, scale_mode: str = "min") -> None:
        super().__init__()
        if scale_mode not in ("min", "median", "rmse"):
            raise ValueError(f"Parameter `scale_mode` must be 'min', 'median' or 'rmse', got {scale_mode!r}.")
        self.scale_mode = scale_mode

    masked_rows = True

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T = gramian.shape[0]
        G = gramian.to(work_dtype(gramian))
        lam, V = torch.linalg.eigh(0.5 * (G + G.T))
        lam, order = lam.sort(descending=True)
        V = V[:, order]
        keep = lam > lam[0] * T * torch.finfo(gramian.dtype).eps
        rank = keep.sum()
        safe = torch.where(keep, lam, torch.ones_like(lam))
        inv_sqrt = torch.where(keep, safe.rsqrt(), torch.zeros_like(lam))
        if self.scale_mode == "min":
            scale = torch.where(keep, lam, torch.full_like(lam, float("inf"))).min()
        elif self.scale_mode == "rmse":
            scale = torch.where(keep, lam, torch.zeros_like(lam)).sum() / rank.clamp_min(1)
        else:  # lower median of the kept eigenvalues (sorted descending)
            idx = (rank - 1 - (rank - 1) // 2).clamp_min(0)
            scale = lam[idx]
        present = self._present()
        if present is None:
            pref = torch.full((T,), 1.0 / T, dtype=G.dtype, device=G.device)
        else:  # a zero row spans no kept eigenvector: it only leaves the preference (1/m on the others)
            pref = present.to(G.dtype)
            pref = pref / pref.sum().clamp_min(1.0)
        w = scale.clamp_min(0).sqrt() * (V @ (inv_sqrt * (V.T @ pref)))
        return torch.where(rank > 0, w, pref)

    def extra_repr(self) -> str:
        return f"scale_mode={self.scale_mode!r}"
