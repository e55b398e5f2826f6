"""Small solvers that run in torch on the tensors' device (no numpy, scipy or host round trip).

Every solver works in float64 (float32 on devices without float64, e.g. MPS) on ``T x T`` problems
(``T`` = number of tasks, at most a few dozen). They never call ``.item()``: iteration counts are fixed
upper bounds, and on the CPU (where a host check is free) the loops stop as soon as they have converged.
Each solver returns, with its solution, a boolean tensor saying whether it met its optimality test; the
methods replace an uncertified answer by a documented safe one and count it
(``Aggregator.solver_fallbacks``), so a failure is reported, never silent, and never kills a run.

Precision: a Gramian computed in float32 is indefinite by about ``1e-8·λmax`` (round-off), more than the
``1e-8`` ridges below, and the QPs then have no bounded solution. :func:`gramian` therefore builds ``JJᵀ``
in float64 (the aggregators' ``forward`` uses it), and a Gramian that arrives in a lower precision (through
``gramian_weights``) gets an extra ridge of ``T·eps(dtype)·tr(G)`` (:func:`rounding_ridge`).

* :func:`nnqp` - batched ``min ½ xᵀAx + bᵀx`` s.t. ``x >= 0`` by the Lawson-Hanson active-set method.
* :func:`min_norm_simplex` - the min-norm point of the convex hull of the gradients (MGDA).
* :func:`cagrad_dual` - CAGrad's ``min_{w ∈ Δ} bᵀw + r‖Jᵀw‖`` by a primal-dual active set.
* :func:`nash_bargaining` - Nash-MTL's ``Gα = 1/α`` by damped Newton on a self-concordant barrier.
* :func:`project_simplex` - Euclidean projection onto the probability simplex (sort based).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import host_reads_are_free

__all__ = [
    "cagrad_dual",
    "gramian",
    "min_norm_simplex",
    "nash_bargaining",
    "nnqp",
    "normalize_gramian",
    "project_simplex",
    "rounding_ridge",
    "visit_orders",
    "work_dtype",
]


def work_dtype(t: Tensor) -> torch.dtype:
    """float64 where the device supports it (not MPS), else float32."""
    return torch.float32 if t.device.type == "mps" else torch.float64


def _can_stop_early(t: Tensor) -> bool:
    return host_reads_are_free(t)  # on the CPU only: a host read there does not wait for a device


_CHUNK = 1 << 20  # columns per float64 block: bounds the float64 copy of J to T x 1M values


def gramian(J: Tensor, other: Tensor | None = None) -> Tensor:
    """``J Jᵀ`` (or ``J otherᵀ``) in the working dtype (float64 where available), by blocks of columns.

    Cheap next to the ``T`` backward passes that produced ``J`` (``T² n`` flops), and it removes the
    round-off that makes a float32 Gramian indefinite (the solvers' ridges are ``1e-8·tr(G)``), and the
    float32 range of the squares (gradients of 1e-25 or 1e20 are float32 values, their products are not).
    """
    K = J if other is None else other
    dt = work_dtype(J)
    if J.dtype == dt and K.dtype == dt:
        return J @ K.T
    n = J.shape[1]
    if n <= _CHUNK:
        Jw = J.to(dt)
        return Jw @ (Jw if other is None else K.to(dt)).T
    G = J.new_zeros(J.shape[0], K.shape[0], dtype=dt)
    for i in range(0, n, _CHUNK):
        Jw = J[:, i : i + _CHUNK].to(dt)
        G = G + Jw @ (Jw if other is None else K[:, i : i + _CHUNK].to(dt)).T
    return G


def rounding_ridge(dtype: torch.dtype, num_tasks: int) -> float:
    """Ridge, relative to ``tr(G)``, that covers the round-off of a Gramian computed in ``dtype``."""
    if dtype == torch.float64:
        return 0.0
    return num_tasks * torch.finfo(dtype).eps


def normalize_gramian(G: Tensor, reg: float = 0.0) -> Tensor:
    """``G / tr(G) + reg·I`` in the working dtype (``G`` itself when its trace is 0).

    A Gramian given in a precision below float64 gets :func:`rounding_ridge` on top of ``reg``.
    """
    reg = reg + rounding_ridge(G.dtype, G.shape[0])
    G = G.to(work_dtype(G))
    G = 0.5 * (G + G.T)
    tr = G.diagonal().sum()
    G = G / torch.where(tr > 0, tr, torch.ones_like(tr))
    if reg:
        G = G + reg * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    return G


def _masked_solve(A: Tensor, rhs: Tensor, P: Tensor) -> Tensor:
    """Solve ``A[P,P] z[P] = rhs[P]`` with ``z[~P] = 0`` for each row of the batch ``P`` [B, T]."""
    Pf = P.to(A.dtype)
    M = A * (Pf[:, :, None] * Pf[:, None, :]) + torch.diag_embed(1.0 - Pf)
    z: Tensor = torch.linalg.solve(M, (rhs * Pf).unsqueeze(-1)).squeeze(-1)
    return z


def nnqp(A: Tensor, b: Tensor, *, max_iter: int | None = None, tol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Solve ``min ½ xᵀAx + bᵀx`` s.t. ``x >= 0`` for each row of ``b``.

    A primal-dual active-set phase (Hintermüller, Ito & Kunisch 2002: the whole support is updated at
    once, typically a handful of iterations for any ``T``) is followed by Lawson-Hanson active-set
    iterations (finite termination, one index at a time) that certify the result or finish it when the
    first phase cycles.

    Args:
        A: ``[T, T]`` symmetric positive definite (regularise a Gramian first).
        b: ``[B, T]`` linear terms, one problem per row.
        max_iter: bound on the Lawson-Hanson iterations (default ``3T + 10``); each is one batched solve.
        tol: KKT tolerance, relative to the scale of ``A``, ``b`` and ``x``.

    Returns:
        ``(x, ok)``: the solutions ``[B, T]`` and whether each met the KKT conditions.
    """
    B, T = b.shape
    max_iter = 3 * T + 10 if max_iter is None else max_iter
    a_max = A.diagonal().abs().max()
    b_max = b.abs().amax(dim=1, keepdim=True)
    early = _can_stop_early(b)
    # phase 1: primal-dual active set
    F = b < 0
    x = torch.zeros_like(b)
    settled = torch.zeros(B, dtype=torch.bool, device=b.device)
    for _ in range(8 if early else 2 + T.bit_length()):
        x = _masked_solve(A, -b, F)
        tol_g = tol * (b_max + a_max * x.abs().amax(dim=1, keepdim=True))
        lam = x @ A + b
        F_new = (F & (x > 0)) | (~F & (lam < -tol_g))
        settled = (F_new == F).all(dim=1)
        if early and bool(settled.all()):
            break
        F = F_new
    x = torch.where(F & settled[:, None], x, torch.zeros_like(x)).clamp_min(0.0)
    # phase 2: Lawson-Hanson from the phase-1 point (a no-op certificate when phase 1 converged)
    P = x > 0
    inner = ~settled
    neg_inf = torch.tensor(float("-inf"), dtype=b.dtype, device=b.device)
    for _ in range(max_iter):
        tol_g = tol * (b_max + a_max * x.abs().amax(dim=1, keepdim=True))
        w = -(x @ A + b)  # minus the gradient
        cand = ~P & (w > tol_g)
        add = ~inner & cand.any(dim=1)
        if early and not bool((add | inner).any()):
            break
        j = torch.where(cand, w, neg_inf).argmax(dim=1)
        P = P | ((j[:, None] == torch.arange(T, device=j.device)) & add[:, None])  # one_hot reads j on the host
        active = inner | add
        z = _masked_solve(A, -b, P)
        bad = P & (z <= 0)
        feasible = ~bad.any(dim=1)
        ratio = torch.where(bad, x / (x - z).clamp_min(torch.finfo(b.dtype).tiny), torch.full_like(x, 2.0))
        alpha = torch.where(feasible, torch.ones_like(ratio[:, 0]), ratio.amin(dim=1).clamp(0.0, 1.0))
        x_new = x + alpha[:, None] * (z - x)
        x = torch.where(active[:, None], x_new, x)
        drop = active & ~feasible
        P = torch.where(drop[:, None], P & (x > tol_g), P)
        x = torch.where(P, x, torch.zeros_like(x)).clamp_min(0.0)
        inner = drop
    grad = x @ A + b
    tol_g = tol * (b_max + a_max * x.abs().amax(dim=1, keepdim=True))
    ok = ~inner & (grad >= -10 * tol_g).all(dim=1) & ((grad.abs() <= 10 * tol_g) | (x <= 0)).all(dim=1)
    ok = ok & torch.isfinite(x).all(dim=1)
    return x, ok


def min_norm_simplex(G: Tensor, *, reg: float = 1e-8, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Weights ``w ∈ Δ`` minimising ``wᵀGw``: the min-norm point of the convex hull (MGDA).

    ``T = 2`` uses the closed form of Sener & Koltun (2018). Otherwise the dual problem
    ``min_{v>=0} ½vᵀGv - 1ᵀv`` is solved by :func:`nnqp` and ``w = v / 1ᵀv`` (its KKT conditions are
    exactly those of the min-norm problem); a ridge ``reg·tr(G)/T`` keeps it bounded when 0 lies in the
    hull, where any minimiser gives the zero update.

    ``present`` (a boolean ``Tensor[T]``) restricts the simplex to those rows (zero rows of ``G``): the others
    get weight 0, no host read (their dual variable has no linear term and no coupling, so it stays 0; the
    ridge is ``reg·tr(G)/m`` for the ``m`` rows solved).
    """
    T = G.shape[0]
    if present is not None:
        return _min_norm_simplex_masked(normalize_gramian(G), reg, present)
    Gn = normalize_gramian(G)
    if T == 1:
        return torch.ones(1, dtype=Gn.dtype, device=Gn.device), torch.ones((), dtype=torch.bool, device=G.device)
    if T == 2:
        den = Gn[0, 0] + Gn[1, 1] - 2 * Gn[0, 1]
        num = Gn[1, 1] - Gn[0, 1]
        gamma = torch.where(den > 1e-12, num / torch.where(den > 1e-12, den, torch.ones_like(den)), 0.5 + 0 * den)
        gamma = gamma.clamp(0.0, 1.0)
        return torch.stack([gamma, 1 - gamma]), torch.isfinite(gamma)
    A = Gn + (reg / T) * torch.eye(T, dtype=Gn.dtype, device=Gn.device)
    v, ok = nnqp(A, -torch.ones(1, T, dtype=Gn.dtype, device=Gn.device))
    v = v[0]
    s = v.sum()
    return v / s, ok[0] & (s > 0)


def visit_orders(T: int, present: Tensor | None, device: torch.device) -> Tensor:
    """Random visiting orders ``rand(T, T).argsort(dim=1)`` (PCGrad, GradVac).

    With ``present`` (the non-zero rows, ``m`` of them) the present rows visit each other in the orders the
    ``m``-task problem draws: its ``m·m`` numbers are the first ones of the ``T·T`` (row-major) drawn here,
    mapped onto the present rows by rank; the zero rows come last. No host read."""
    r = torch.rand(T, T, device=device)
    if present is None:
        return r.argsort(dim=1)
    rank = present.cumsum(0) - 1
    idx = (rank[:, None] * present.sum() + rank[None, :]).clamp(0, T * T - 1)
    vals = torch.where(present[:, None] & present[None, :], r.reshape(-1)[idx], torch.full_like(r, 2.0))
    return vals.argsort(dim=1)


def _min_norm_simplex_masked(Gn: Tensor, reg: float, present: Tensor) -> tuple[Tensor, Tensor]:
    T, p = Gn.shape[0], present.to(Gn.dtype)
    m = p.sum()
    yes = torch.ones((), dtype=torch.bool, device=Gn.device)
    if T <= 2:  # the closed form when both rows are there; one row: weight 1; none: 0
        if T == 1:
            return p, yes
        w, ok = min_norm_simplex(Gn)
        return torch.where(present.all(), w, p), ok | ~present.all()
    A = Gn + (reg / m.clamp_min(1.0)) * torch.eye(T, dtype=Gn.dtype, device=Gn.device)
    v, ok = nnqp(A, -p[None])
    v = v[0]
    s = v.sum()
    none = m == 0
    w = torch.where(none, torch.zeros_like(v), v / torch.where(s > 0, s, torch.ones_like(s)))
    return w, (ok[0] & (s > 0)) | none


def cagrad_dual(
    G: Tensor, c: float, *, reg: float = 1e-8, max_iter: int | None = None, present: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """CAGrad's weights: ``1/T + r·w/‖g_w‖`` with ``w = argmin_{w ∈ Δ} g_wᵀg₀ + r‖g_w‖``, ``r = c‖g₀‖``.

    Writing ``v = r·w/‖g_w‖ >= 0``, the KKT conditions are ``Gv + b = μ1 + λ``, ``λ >= 0``, ``λᵀv = 0``,
    ``vᵀGv = r²`` with ``b = G1/T``. On a support ``F``, ``v_F = μ·A_FF⁻¹1 − A_FF⁻¹b_F`` with ``μ`` the
    larger root of ``vᵀGv = r²``. A primal-dual active-set update of ``F`` usually finds the support in a
    few steps; its result is verified, and when it cycles a homotopy takes over: for fixed ``μ`` the
    first three conditions define a parametric non-negative QP whose solution ``v(μ)`` is piecewise
    linear in ``μ`` with ``vᵀGv`` increasing, so following it from ``μ = min b`` (where ``v = 0``), one
    support change per step, reaches the exact root. Returns ``(weights, ok)``.

    ``present`` (a boolean ``Tensor[T]``, the non-zero rows of ``G``) solves the problem of those ``m`` rows
    with no host read: ``1/m`` and ``g₀`` over them, the supports never hold the others (weight 0).
    """
    T = G.shape[0]
    Gn = normalize_gramian(G)
    dt, dev = Gn.dtype, Gn.device
    one = torch.ones(T, dtype=dt, device=dev)
    yes = torch.ones((), dtype=torch.bool, device=dev)
    pm: Tensor = one if present is None else present.to(dt)  # the rows solved, and their number
    m: Tensor | int = T if present is None else pm.sum().clamp_min(1.0)
    if c == 0:
        return pm / m, yes
    if T == 1:  # w = 1: d = g + c‖g‖·g/‖g‖ = (1 + c)·g (any weight when g = 0)
        return pm * (1.0 + c), yes
    b = Gn @ pm / m
    r2 = c * c * (b.sum() / m).clamp_min(0)  # r² = c²‖g₀‖², ‖g₀‖² = 1ᵀG1/T²
    A = Gn + reg * torch.eye(T, dtype=dt, device=dev)
    early = _can_stop_early(Gn)
    rhs = torch.stack([one, b])
    tol = 1e-8 * (1 + b.abs().max())

    def on_support(F: Tensor) -> tuple[Tensor, Tensor]:
        """``v`` on the support ``F`` with ``vᵀAv = r²`` (larger root), and ``μ``."""
        pq = _masked_solve(A, rhs, F.expand(2, T))
        p, q = pq[0], pq[1]
        a2, a1, a0 = p.sum(), q.sum(), (b * q).sum() - r2
        mu = (a1 + (a1 * a1 - a2 * a0).clamp_min(0.0).sqrt()) / a2
        return mu * p - q, mu

    def kkt(v: Tensor, mu: Tensor) -> Tensor:
        lam = A @ v + b - mu
        lam_ok = lam >= -tol if present is None else (lam >= -tol) | ~present
        return (
            (v >= -tol).all()
            & lam_ok.all()
            & torch.isfinite(v).all()
            # relative and absolute: r² -> 0 at a Pareto-stationary point (g₁ ≈ -g₂), where a purely
            # relative test rejected right answers (G is trace-normalised: 1e-10 is round-off)
            & ((v @ A @ v - r2).abs() <= 1e-6 * r2 + 1e-10)
        )

    # fast path: primal-dual active set on the support (a few iterations; may cycle, so it is verified)
    F = torch.ones(T, dtype=torch.bool, device=dev) if present is None else present
    for _ in range(8 if early else 2 + T.bit_length()):
        v, mu = on_support(F)
        lam = A @ v + b - mu
        F_new = (F & (v > tol)) | (~F & (lam < -tol) if present is None else ~F & (lam < -tol) & present)
        if early and bool((F_new == F).all()):
            break
        F = F_new
    v, mu = on_support(F)
    fast_ok = kkt(v, mu)
    if early and bool(fast_ok):
        return pm / m + v.clamp_min(0.0), fast_ok
    # robust path: follow the piecewise-linear path v(μ) from μ = min b, one support change per step
    v_h, ok_h = _cagrad_homotopy(A, b, r2, on_support, kkt, max_iter, early, present)
    v = torch.where(fast_ok, v, v_h)
    w, ok = pm / m + v.clamp_min(0.0), fast_ok | ok_h
    if present is not None:  # one row: (1 + c)·g as for T = 1; none: 0
        w = torch.where(pm.sum() == 1, pm * (1.0 + c), w)
        ok = ok | (pm.sum() <= 1)
        w = torch.where(pm.sum() == 0, torch.zeros_like(w), w)
    return w, ok


def _cagrad_homotopy(
    A: Tensor,
    b: Tensor,
    r2: Tensor,
    on_support: Callable[[Tensor], tuple[Tensor, Tensor]],
    kkt: Callable[[Tensor, Tensor], Tensor],
    max_iter: int | None,
    early: bool,
    present: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    T, dt, dev = b.shape[0], b.dtype, b.device
    one = torch.ones(T, dtype=dt, device=dev)
    inf = torch.full((), float("inf"), dtype=dt, device=dev)
    b_min = b if present is None else torch.where(present, b, inf)  # start on a row solved
    k = b_min.argmin()
    mu = b_min.min()  # b[k] with a tensor index reads k on the host
    F = k == torch.arange(T, device=dev)  # not one_hot: it reads k on the host
    done = torch.zeros((), dtype=torch.bool, device=dev)
    mu_star = mu
    max_iter = 3 * T + 10 if max_iter is None else max_iter
    eps = 1e-12
    for _ in range(max_iter):
        pq = _masked_solve(A, torch.stack([one, b]), F.expand(2, T))
        p, q = pq[0], pq[1]
        a2, a1, a0 = p.sum(), q.sum(), (b * q).sum() - r2
        root = (a1 + (a1 * a1 - a2 * a0).clamp_min(0.0).sqrt()) / a2
        s, t = A @ p - one, A @ q - b  # off the support, λ(μ) = μ·s − t
        leave = torch.where(F & (p < 0), q / torch.where(p < 0, p, -one), inf)  # v_i(μ) = 0
        joins = ~F & (s < 0) if present is None else ~F & (s < 0) & present
        join = torch.where(joins, t / torch.where(s < 0, s, -one), inf)  # λ_j(μ) = 0
        leave = torch.where(leave > mu - eps, leave, inf)
        join = torch.where(join > mu - eps, join, inf)
        cand = torch.cat([leave, join])
        i = cand.argmin()
        mu_next = cand.min()  # cand[i] with a tensor index reads i on the host
        finish = ~done & (root <= mu_next)
        mu_star = torch.where(finish, root, mu_star)
        move = ~done & ~finish
        F = F ^ ((i % T == torch.arange(T, device=dev)) & move)
        mu = torch.where(move, mu_next, mu)
        done = done | finish
        if early and bool(done):
            break
    pq = _masked_solve(A, torch.stack([one, b]), F.expand(2, T))
    v = (mu_star * pq[0] - pq[1]).clamp_min(0.0)
    return v, done & kkt(v, mu_star)


def nash_bargaining(
    G: Tensor, init: Tensor | None = None, *, reg: float = 1e-9, max_iter: int = 100, tol: float = 1e-12
) -> tuple[Tensor, Tensor]:
    """Solve ``Gα = 1/α``, ``α > 0`` (Nash-MTL's bargaining solution) by damped Newton.

    ``α`` minimises the self-concordant ``f(α) = ½αᵀGα − Σ log αᵢ``; the damped step ``1/(1+λ)`` (``λ`` the
    Newton decrement) stays inside ``α > 0`` without a line search, and once ``λ < ¼`` full steps
    converge quadratically. ``G`` is used as given (plus a ridge ``reg·tr(G)/T`` that keeps ``f`` bounded
    when the gradients are linearly dependent, and :func:`rounding_ridge` for a low-precision ``G``).
    A warm start ``init`` far from the solution (the gradients jumped) can need more damped steps than
    ``max_iter``: the cold start ``1/√diag(G)`` is then run alongside, batched, and the warm answer is
    kept only where it converged. Returns ``(alpha, ok)``.
    """
    T = G.shape[0]
    dt, dev = work_dtype(G), G.device
    reg = reg + rounding_ridge(G.dtype, T)
    Gw = G.to(dt)
    Gw = 0.5 * (Gw + Gw.T)
    eye = torch.eye(T, dtype=dt, device=dev)
    m = Gw.diagonal().mean()
    Gw = torch.where(m > 0, Gw + reg * m * eye, eye)  # all-zero gradients: any α gives the zero update
    cold = Gw.diagonal().clamp_min(torch.finfo(dt).tiny).rsqrt()
    if init is None:
        alpha = cold[None]
    else:
        alpha = torch.stack([init.to(dt).clamp_min(torch.finfo(dt).tiny), cold])
    early = _can_stop_early(Gw)
    dec2 = torch.full(alpha.shape[:1], float("inf"), dtype=dt, device=dev)
    for _ in range(max_iter):
        g = alpha @ Gw - 1.0 / alpha
        H = Gw + torch.diag_embed(alpha.pow(-2))
        step = torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1)
        dec2 = (g * step).sum(dim=1).clamp_min(0.0)
        lam = dec2.sqrt()
        t = torch.where(lam < 0.25, torch.ones_like(lam), 1.0 / (1.0 + lam))
        alpha = alpha - t[:, None] * step
        if early and bool((dec2 < tol).any()):
            break
    ok = (dec2 < 1e-6) & (alpha > 0).all(dim=1) & torch.isfinite(alpha).all(dim=1)
    first = torch.where(ok[0], 0, ok.shape[0] - 1)  # the warm answer if it converged, else the cold one
    idx = first.reshape(1)  # alpha[first] with a tensor index reads it on the host
    return alpha.index_select(0, idx)[0], ok.index_select(0, idx)[0]


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` onto ``{w >= 0, Σw = 1}`` (Held et al. 1974, sort based).

    Each row is first shifted by its maximum (the projection is invariant to adding a constant to every entry):
    at ``|v| ~ 1e16`` and beyond the simplex's ``1`` is otherwise lost to rounding, and every entry projects to 0."""
    top = v.amax(dim=-1, keepdim=True)
    v = v - torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(dim=-1) - 1.0
    k = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    cond = u - css / k > 0
    # cond holds on a prefix, and at k = 1 (u = 0 there after the shift)
    rho = (cond.sum(dim=-1, keepdim=True) - 1).clamp_min(0)
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0.0)
