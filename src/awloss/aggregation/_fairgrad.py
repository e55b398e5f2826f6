"""FairGrad: α-fair resource allocation between the tasks, ``Gw = w^{-1/α}``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._inputs import check_int, check_positive
from .._registry import register
from ._base import GramianAggregator
from ._solvers import _can_stop_early, work_dtype

__all__ = ["FairGrad", "alpha_fair_weights"]


def alpha_fair_weights(G: Tensor, alpha: float, *, reg: float = 1e-9, max_iter: int = 100) -> tuple[Tensor, Tensor]:
    """Solve ``Gw = w^{-1/α}``, ``w > 0`` on the rows with a non-zero gradient (others get 0).

    ``w`` minimises the strictly convex ``f(w) = ½wᵀGw − Σ h(wᵢ)`` with ``h' = w^{-p}``, ``p = 1/α``; it is
    solved for ``G/s`` (``s`` = mean of the diagonal, plus a ridge ``reg·I`` that keeps ``f`` bounded when
    gradients cancel) and rescaled by ``s^{-1/(1+p)}``. Newton steps are damped by a tensor-only line
    search (the best of ``t = 1, ½, …, 2⁻¹⁵`` inside ``w > 0``), so the loop needs no host read. Returns
    ``(w, ok)``: ``ok`` is false when Newton did not converge, or when the ridge carries the answer
    (``reg·wᵢ > ½ wᵢ^{-p}``, so ``(Gw)ᵢ < ½ wᵢ^{-p}``: the unregularised equation has no positive solution,
    the gradients are weakly Pareto-stationary, and the ridge answer can conflict with a task).
    """
    T, dt, dev = G.shape[0], work_dtype(G), G.device
    p = 1.0 / alpha
    Gw = G.to(dt)
    Gw = 0.5 * (Gw + Gw.T)
    present = Gw.diagonal() > 0
    pf = present.to(dt)
    s = (Gw.diagonal() * pf).sum() / pf.sum().clamp_min(1.0)
    s = torch.where(s > 0, s, torch.ones_like(s))
    eye = torch.eye(T, dtype=dt, device=dev)
    A = Gw / s * (pf[:, None] * pf[None, :]) + torch.diag(1.0 - pf) + reg * eye  # absent rows: w_i = 1, dropped
    h: Callable[[Tensor], Tensor] = (lambda w: w.log()) if p == 1.0 else (lambda w: w.pow(1.0 - p) / (1.0 - p))

    def f(w: Tensor) -> Tensor:  # w [..., T]
        return 0.5 * ((w @ A) * w).sum(-1) - h(w).sum(-1)

    w = A.diagonal().rsqrt()
    ts = 2.0 ** -torch.arange(16, dtype=dt, device=dev)
    res = torch.full((), float("inf"), dtype=dt, device=dev)
    early = _can_stop_early(A)  # on the CPU a host check is free: stop once converged
    for _ in range(max_iter):
        g = A @ w - w.pow(-p)
        H = A + torch.diag(p * w.pow(-p - 1.0))
        step = torch.linalg.solve(H, g)
        cand = w[None, :] - ts[:, None] * step[None, :]
        feasible = (cand > 0).all(dim=1)
        vals = torch.where(feasible, f(cand.clamp_min(torch.finfo(dt).tiny)), torch.full_like(ts, float("inf")))
        # the longest step within round-off of the best: near the solution every t gives the same f up to
        # round-off, and an argmin over that noise took short steps, so Newton stalled at ~1e-12 (100 calls)
        low = vals.min()
        best = (vals <= low + 64 * torch.finfo(dt).eps * low.abs().clamp_min(1.0)).to(torch.int8).argmax()
        w = torch.where(feasible.any(), cand.index_select(0, best.reshape(1))[0], w)  # cand[best] reads best on the host
        res = (A @ w - w.pow(-p)).abs().max() / w.pow(-p).abs().max()
        # on the CPU: stop once converged, or once the ridge carries the answer (rejected below anyway)
        if early and bool((res < 1e-13) | ((res < 1e-6) & (reg * w * w.pow(p) > 0.5).any())):
            break
    # certified only where the ridge is negligible: (G/s)w = w^(-p) - reg·w >= ½ w^(-p) > 0 on every task
    ridge_small = (reg * w * w.pow(p) <= 0.5).all()
    ok = (res < 1e-6) & torch.isfinite(w).all() & (w > 0).all() & ridge_small
    w = w * s.pow(-1.0 / (1.0 + p))
    return torch.where(present, w, torch.zeros_like(w)), ok


@register
class FairGrad(GramianAggregator):
    r"""FairGrad: the update that maximises an α-fair utility of the tasks' loss decreases.

    Each task's benefit from the update :math:`d` is :math:`g_i^\top d`; FairGrad picks :math:`d` to
    maximise :math:`\sum_i u_\alpha(g_i^\top d)` with the α-fair utility :math:`u_\alpha`, which trades the
    total decrease (:math:`\alpha \to 0`: the summed gradient) against fairness (:math:`\alpha = 1`:
    proportional fairness, Nash-MTL's equation; :math:`\alpha \to \infty`: max-min fairness). With
    :math:`d = J^\top w` the optimality condition is a fixed point on the Gramian.

    .. math::
        G w = w^{-1/\alpha}\ (\text{elementwise}),\ w > 0, \qquad d = \sum_i w_i g_i

    where:
        - :math:`G = JJ^\top`; the update scales as :math:`c^{(1-\alpha)/(1+\alpha)}` when the gradients are
          multiplied by :math:`c` (scale invariant at :math:`\alpha = 1`);
        - a task with an all-zero gradient (absent) gets weight 0 and the others are solved without it;
        - :math:`\alpha = 0` is the uniform weighting :math:`w = 1/T`, as in TorchJD;
        - when :math:`0` is in the convex hull of the gradients (weakly Pareto-stationary: exactly opposite
          tasks, :math:`T >` rank), the equation has no positive solution and every direction leaves a task
          with :math:`g_i^\top d \le 0`; the update is then :math:`0` (MGDA's answer there, conflict-free).

    Args:
        alpha: the fairness parameter :math:`\alpha \ge 0`; default ``1.0`` (the official code's default;
            the paper's experiments also use 2, 5 and 10). TorchJD has no default.
        max_iters: bound on the Newton iterations, an int ``>= 1``; ``None`` (default) means 100. TorchJD
            passes it to scipy's ``least_squares`` as ``max_nfev``.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("fairgrad", alpha=1.0)
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # w = (1, 1/2): Gw = 1/w
        tensor([1., 1.])
        >>> agg.weights
        tensor([1.0000, 0.5000])

    References:
        Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024,
        https://arxiv.org/abs/2402.15638 (Eq. 4, Algorithm 1).

    Note:
        TorchJD and the official code solve the equation with scipy's ``least_squares`` on the CPU (bounded
        at ``w >= 0``, stopped at its default tolerances); we run damped Newton in torch on the device, to a
        residual below ``1e-6``, so the weights agree with TorchJD's to about its tolerance. A ridge of
        ``1e-9·mean diag(G)`` keeps the iteration bounded when gradients cancel; where that ridge carries
        the answer (no positive solution, see above) or Newton does not converge, the weights are 0 (counted
        in ``solver_fallbacks``, warned once). TorchJD's solver then stops wherever it is: on ``[v, -2v,
        v/2]`` its update conflicts with a task by ``1.6e-4·‖v‖²`` (ours is 0). The official code clips the update to norm 1
        (``max_norm``); as TorchJD, we do not: clip the gradients yourself if you want it.
    """

    name = "fairgrad"
    aliases = ("fair_grad",)
    conflict_free = True  # g_iᵀd = (Gw)_i >= ½ w_i^{-1/α} > 0 where certified, else d = 0

    def __init__(self, alpha: float = 1.0, max_iters: int | None = None) -> None:
        super().__init__()
        self.alpha = check_positive("alpha", alpha, strict=False)
        self.max_iters = None if max_iters is None else check_int("max_iters", max_iters)

    masked_rows = True  # a zero row's weight is 0 without a mask (its row and column are 0): the base zeroes it

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T = gramian.shape[0]
        if self.alpha == 0:
            return torch.full((T,), 1.0 / T, dtype=gramian.dtype, device=gramian.device)
        w, ok = alpha_fair_weights(gramian, self.alpha, max_iter=self.max_iters or 100)
        return self._certified(w, ok, torch.zeros_like(w), "the α-fair solver (Gw = w^(-1/α))")

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, max_iters={self.max_iters}"
