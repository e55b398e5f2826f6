"""Krum / Multi-Krum: select the task gradients closest to their neighbours (Byzantine-robust)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._checks import host_reads_are_free
from .._inputs import check_int
from .._registry import register
from ._base import GramianAggregator

__all__ = ["Krum"]


@register
class Krum(GramianAggregator):
    r"""Krum (Multi-Krum): average the ``n_selected`` gradients with the smallest distance to their neighbours.

    Each gradient is scored by the sum of its distances to its :math:`T - f - 2` nearest other gradients; the ``n_selected`` lowest scores are averaged. Up to
    :math:`f` arbitrary (Byzantine) rows cannot drag the update far, since they are never all selected.
    Distances come from the Gramian, so the weights can be computed from ``G = JJᵀ`` alone.

    .. math::
        s_i = \sum_{j \in N_i} \|g_i - g_j\|, \qquad w_i = \frac{1}{m}[i \in S],\qquad d = \sum_i w_i g_i

    where:
        - :math:`N_i` are the :math:`k = \max(T - f - 2, 1)` nearest other rows (Euclidean distance,
          :math:`\|g_i - g_j\|^2 = G_{ii} + G_{jj} - 2G_{ij}`), :math:`k = 0` when :math:`T = 1`;
        - :math:`S` are the :math:`m` rows of smallest score; rows tied at the boundary share its remaining
          slots equally (so the weights do not depend on the task order);
        - all-zero rows (tasks absent from the batch) are left out, as neither neighbours nor candidates
          (:math:`T` then counts the present rows; every weight is 0 when no row is present). When fewer than
          :math:`f + 3` rows are present, :math:`f` is lowered to what they allow (:math:`k = 1`) and at most
          the present rows are selected: the update is Krum's on the present rows alone (a ``UserWarning``,
          once per instance, says so where reading the count is free, on the CPU).

    Args:
        n_byzantine: :math:`f`, the number of rows that may be adversarial, an int ``>= 0``; ``T`` must be at
            least ``f + 3`` when ``f > 0`` (the paper asks ``2f + 2 < T`` for its guarantee). Default ``0``.
        n_selected: :math:`m`, how many rows are averaged (``1``: Krum; more: Multi-Krum), ``1 <= m <= T``.
            Default ``1`` (the paper's Krum).

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("krum", n_byzantine=1, n_selected=2)
        >>> J = torch.tensor([[1.0, 0.0], [1.2, 0.1], [0.9, 0.0], [1.0, -0.3], [-50.0, 40.0]])
        >>> update = agg(J)
        >>> agg.weights
        tensor([0.5000, 0.0000, 0.5000, 0.0000, 0.0000])

    References:
        Blanchard, El Mhamdi, Guerraoui & Stainer, "Machine Learning with Adversaries: Byzantine Tolerant
        Gradient Descent", NeurIPS 2017,
        https://proceedings.neurips.cc/paper/2017/hash/f4b9ec30ad9f68f89b29639786cb62ef-Abstract.html.

    Note:
        As TorchJD's ``Krum``, scores sum the distances (the paper sums squared distances; the selection
        usually agrees). TorchJD refuses ``T < f + 3`` for every ``f`` and breaks ties by position; we accept
        ``T < 3`` when ``f = 0`` (``k`` clamped to 1), share ties, and leave all-zero (absent) rows out.
    """

    name = "krum"
    zero_rows = "own"  # all-zero rows are left out by its own masks (T counts the present rows)
    aliases = ("multi_krum",)

    def __init__(self, n_byzantine: int = 0, n_selected: int = 1) -> None:
        super().__init__()
        self.n_byzantine = check_int("n_byzantine", n_byzantine, minimum=0)
        self.n_selected = check_int("n_selected", n_selected, minimum=1)

    @classmethod
    def _make_example(cls, num_tasks: int) -> Krum:
        return cls(n_byzantine=1 if num_tasks >= 4 else 0, n_selected=1)

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T, f, m = gramian.shape[0], self.n_byzantine, self.n_selected
        full = self._rows_of if self._rows is not None else T  # the base may hand us the present rows only
        if f > 0 and full < f + 3:
            raise ValueError(f"Parameter `n_byzantine` = {f} needs at least {f + 3} tasks (n_byzantine + 3), got {full}.")
        if m > full:
            raise ValueError(f"Parameter `n_selected` = {m} must be <= the number of tasks, got {full} tasks.")
        G = gramian / gramian.diagonal().amax().clamp_min(torch.finfo(gramian.dtype).tiny)  # scale-free
        sq = G.diagonal()
        dist = (sq[:, None] + sq[None, :] - 2 * G).clamp_min(0.0).sqrt()
        dist = (dist + dist.T) / 2  # exactly symmetric: mutual nearest neighbours tie exactly (shared)
        present = gramian.diagonal() > 0  # all-zero rows (absent tasks) are left out: not neighbours, not chosen
        count = present.sum()
        k = torch.minimum((count - f - 2).clamp_min(1), (count - 1).clamp_min(0))  # neighbours among the present rows
        inf = torch.full_like(dist, float("inf"))
        dist = torch.where(present[None, :], dist, inf).fill_diagonal_(float("inf"))
        nearest, _ = torch.sort(dist, dim=1)
        cols = torch.arange(T, device=G.device)[None, :]
        scores = torch.where(cols < k, nearest, torch.zeros_like(nearest)).sum(dim=1)
        scores = torch.where(present, scores, torch.full_like(scores, float("inf")))
        threshold = torch.sort(scores).values[m - 1]
        below, tied = scores < threshold, (scores == threshold) & present
        chosen = torch.minimum(torch.full_like(count, m), count).clamp_min(1)  # fewer present rows than n_selected
        if host_reads_are_free(count) and not self.__dict__.get("_fewer_warned"):
            c = int(count)
            if 0 < c < full and ((f > 0 and c < f + 3) or c < m):
                self._fewer_warned = True
                warnings.warn(
                    f"Krum: {c} of {full} tasks present (the others absent or with a zero gradient); "
                    f"n_byzantine = {f} and n_selected = {m} are lowered to what {c} rows allow "
                    f"({max(0, min(f, c - 3))} and {min(m, c)}; warned once).", UserWarning, stacklevel=5)
        share = (chosen - below.sum()).to(G.dtype) / tied.sum().clamp_min(1).to(G.dtype)
        return (below.to(G.dtype) + tied.to(G.dtype) * share) / chosen.to(G.dtype)

    def extra_repr(self) -> str:
        return f"n_byzantine={self.n_byzantine}, n_selected={self.n_selected}"
