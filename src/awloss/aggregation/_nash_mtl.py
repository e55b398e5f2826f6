"""Nash-MTL: the Nash bargaining solution between the tasks."""

from __future__ import annotations

import torch
from torch import Tensor

from .._inputs import check_int, check_positive
from .._registry import register
from ._base import GramianAggregator
from ._solvers import nash_bargaining, work_dtype

__all__ = ["NashMTL"]


@register
class NashMTL(GramianAggregator):
    r"""Multi-task learning as a bargaining game: weights with :math:`\alpha_i (G\alpha)_i = 1`.

    The update is the Nash bargaining solution inside a ball: it is scale-invariant in the sense that a
    task's share of the update does not grow with its gradient's norm. Weights are solved on the
    Gramian by damped Newton, warm-started from the previous step (state kept in
    a buffer), and the update norm is clipped to ``max_norm``.

    .. math::
        G \alpha = \alpha^{-1}\ (\text{elementwise}),\ \alpha > 0, \qquad
        d = \min\Big(1, \frac{\text{max\_norm}}{\|\alpha^\top J\|}\Big)\, \alpha^\top J

    where:
        - :math:`G = JJ^\top` is the Gramian, solved as :math:`\tilde G = S^{-1} G S^{-1}`,
          :math:`S = \operatorname{diag}(\|g_i\|)`, then :math:`\alpha = S^{-1}\beta` (exact; the official code
          divides by :math:`\|G\|_F`, see Note);
        - :math:`\alpha` minimises :math:`\tfrac12\alpha^\top G\alpha - \sum_i\log\alpha_i`.

    Args:
        max_norm: clip the update to this norm; ``0`` disables clipping. Official default ``1.0``.
        update_weights_every: recompute the weights every this many calls (reuse them in between);
            official default ``1``.
        max_iter: bound on the Newton iterations (default ``100``; a warm start needs a handful).

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("nash_mtl", max_norm=0.0)
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]])).round(decimals=4)  # α = (1, 1/2): Gα = 1/α
        tensor([1., 1.])
        >>> agg.weights.round(decimals=4)
        tensor([1.0000, 0.5000])

    References:
        Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task Learning as a
        Bargaining Game", ICML 2022.

    Note:
        The official code runs ``optim_niter=20`` sequential convex problems through cvxpy/ECOS on the CPU,
        and a bare ``except`` silently keeps the old weights when ECOS fails. Newton on the self-concordant
        objective reaches the same fixed point in torch. A warm start that does not converge (the gradients
        jumped) is retried from the cold start in the same batched solve; if neither converges, the last
        certified weights are kept (as the official code does, but counted in ``solver_fallbacks`` and
        warned once), or ``α_i = 1/√(T·G_ii)`` on the first call. A ridge of ``1e-9`` on the unit diagonal of
        :math:`\tilde G` keeps the problem bounded for dependent gradients; a task whose gradient is exactly 0
        gets weight 0. Normalising by the diagonal rather than by :math:`\|G\|_F` keeps the ridge from
        swamping a task whose gradient is 1e-5 times the others' (its share :math:`\alpha_i(G\alpha)_i` fell to 0.2).
    """

    name = "nash_mtl"
    aliases = ("nashmtl",)
    stateful = True
    alpha: Tensor  # buffer (registered in __init__)

    def __init__(self, max_norm: float = 1.0, update_weights_every: int = 1, max_iter: int = 100) -> None:
        super().__init__()
        self.max_norm = check_positive("max_norm", max_norm, strict=False)
        self.update_weights_every = check_int("update_weights_every", update_weights_every)
        self.max_iter = check_int("max_iter", max_iter)
        self.register_buffer("alpha", torch.zeros(0))
        self._init_step_counter()

    def reset_parameters(self) -> None:
        self.alpha = torch.zeros(0, device=self.step.device)
        self._reset_step()

    masked_rows = True

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T, present = gramian.shape[0], self._present()
        rows = self._rows  # the tasks solved (zero rows are left out by the base); None: all of them
        full = T if rows is None else self._rows_of
        n: Tensor | int = T  # the number of tasks solved
        if present is not None:  # a zero row becomes a decoupled c·e_i (c: the others' mean diagonal):
            p = present.to(gramian.dtype)  # its α = 1/√c leaves the others' Gα = 1/α unchanged
            n = p.sum().clamp_min(1.0)
            d = gramian.diagonal()
            c = (d.sum() / n).clamp_min(torch.finfo(gramian.dtype).tiny)
            gramian_solved = gramian + torch.diag((1 - p) * c)
        else:
            gramian_solved = gramian
        known = self.alpha.shape == (full,)
        warm = (self.alpha if rows is None else self.alpha[rows]) if known else None
        if warm is not None and self._step % self.update_weights_every != 0:
            alpha = warm.to(gramian.dtype)
        else:
            # Solve on G normalised by its diagonal (unit-norm gradients): with s = √diag(G), G̃β = 1/β for
            # G̃ = G/(s sᵀ) gives α = β/s with Gα = 1/α exactly, and the solver's ridge (relative to the mean
            # diagonal) no longer swamps a task whose gradient is 1e-5 times the others' (zero rows are left out).
            G = gramian_solved
            Gw = G.to(work_dtype(G))
            s = Gw.diagonal().clamp_min(0).sqrt().clamp_min(torch.finfo(Gw.dtype).tiny)
            init = None if warm is None else warm * s
            Gn = (Gw / (s[:, None] * s[None, :])).to(G.dtype)  # its dtype sets the solver's rounding ridge
            b, ok = nash_bargaining(Gn, init, max_iter=self.max_iter)
            a = b / s
            if warm is not None:  # fallback: the last certified weights, else each task's update norm 1/√T
                safe = warm.to(a.dtype)
            else:
                safe = (n * G.diagonal().to(a.dtype)).clamp_min(torch.finfo(a.dtype).tiny).rsqrt()
            a = self._certified(a, ok, safe, "the bargaining solver")
            if present is not None:  # keep the absent tasks' last weights for when they come back
                a = torch.where(present, a, self.alpha.to(a.dtype) if known else torch.zeros_like(a))
            if rows is None:
                self.alpha = a.detach()
            else:  # keep the absent tasks' last weights for when they come back
                base = self.alpha.to(a.dtype) if known else a.new_zeros(full)
                self.alpha = base.index_copy(0, rows, a.detach())
            alpha = a.to(gramian.dtype)
        self._advance_step()
        if present is not None:
            alpha = torch.where(present, alpha, torch.zeros_like(alpha))
        if self.max_norm > 0:
            norm = (alpha @ gramian @ alpha).clamp_min(0).sqrt()
            alpha = alpha * torch.where(norm > self.max_norm, self.max_norm / norm, torch.ones_like(norm))
        return alpha

    @classmethod
    def _make_example(cls, num_tasks: int) -> NashMTL:
        return cls()

    def extra_repr(self) -> str:
        return f"max_norm={self.max_norm}, update_weights_every={self.update_weights_every}"
