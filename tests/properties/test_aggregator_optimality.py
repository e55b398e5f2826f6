"""Each solver-based aggregator's own optimality conditions, on every degenerate family and generated matrices.

Issue 11 §7: finiteness is not enough; the answer must be the method's. The conditions are checked in
float64 on the method's public output (update, ``weights``, ``solver_fallbacks``), over the present
(non-zero) rows, since zero rows are left out of every solve:

- MGDA, ``d = Jᵀw``, ``w ∈ Δ`` (min-norm point of the hull): KKT ``g_iᵀd >= ‖d‖²`` for every task and
  complementary slackness ``w_i (g_iᵀd - ‖d‖²) ≈ 0``.
- DualProj, ``d = Jᵀw`` the projection of the mean onto the dual cone ``{x: Jx >= 0}``: with ``λ = w - 1/T``,
  the dual QP's KKT ``λ >= 0``, ``Jd >= 0``, ``λ_i (Jd)_i ≈ 0``; and ``d`` equals a float64 reference
  projection (enumeration of the active sets, written here).
- UPGrad: ``d`` equals the sum of the reference projections of ``g_i / T``.
- CAGrad (``rescale=False``): ``d`` is feasible, ``‖d - g₀‖ <= c‖g₀‖``, and closes the duality gap: its
  worst improvement ``min_i g_iᵀd`` equals the dual objective ``g_vᵀg₀ + c‖g₀‖‖g_v‖`` at its own
  ``v = (w - 1/T) / Σ(w - 1/T)``; weak duality makes that a certificate of optimality of both.
- Nash-MTL (``max_norm=0``): ``α_i (Gα)_i = 1`` up to its documented ridge ``1e-9·G_ii`` (on G
  normalised by its diagonal: ``α_i(Gα)_i = 1 - 1e-9·G_ii·α_i²``), or its documented fallback, counted in ``solver_fallbacks``.
- FairGrad: ``w_i^{1/a}(Gw)_i ∈ [½, 1]`` (certified; 1 up to its ridge), or its fallback ``w = 0``, counted,
  and only where the rows are weakly Pareto-stationary (MGDA's min-norm point is 0).

Tolerances: ``tol = 10·(T·eps + ρ)·tr(G)·max(1, ‖w‖₁)`` for inner products, with ``eps`` the input dtype's
machine epsilon (the update is formed in that dtype) and ``ρ = 1e-8`` the solvers' ridge relative to
``tr(G)``; distances between updates use ``√tol``-scaled norms (see ``_close``).
"""

from __future__ import annotations

import itertools
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import awloss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _matrices import sample, structured  # noqa: E402
from test_aggregator_degenerate import FAMILIES, family  # noqa: E402

F64 = torch.float64
RHO = 1e-8


def _call(agg, J):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a documented fallback warns; it is checked through solver_fallbacks
        return agg(J)


def _present(J: torch.Tensor) -> torch.Tensor:
    return (J != 0).any(dim=1)


def _tol(J: torch.Tensor, w: torch.Tensor | None = None) -> float:
    T = J.shape[0]
    eps = torch.finfo(J.dtype).eps
    l1 = 1.0 if w is None else max(1.0, float(w.double().abs().sum()))
    return 10 * (T * eps + RHO) * float((J.double() ** 2).sum()) * l1


def _close(d: torch.Tensor, ref: torch.Tensor, J: torch.Tensor, w: torch.Tensor, what: str) -> None:
    """‖d - ref‖ <= √(tol·‖w‖₁)-sized: an error δ in the weights moves d by ‖Jᵀδ‖ <= √tr(G)·‖δ‖."""
    err = float((d.double() - ref).norm())
    scale = float(J.double().norm()) * max(1.0, float(w.double().abs().sum()))
    eps = torch.finfo(J.dtype).eps
    bound = 10 * (J.shape[0] * eps + 1e-6) * scale  # 1e-6: the ridge's effect on the weights (√ρ-sized, measured)
    assert err <= bound, f"{what}: ‖d - reference‖ = {err:.3g} > {bound:.3g}"


# ------------------------------------------------------------------ float64 reference projection
def project_dual_cone(J: torch.Tensor, u: torch.Tensor, rho: float = RHO) -> torch.Tensor:
    """Projection of ``Jᵀu`` onto ``{x: Jx >= 0}`` for the documented ridge: ``Jᵀ(u + λ)`` with
    ``λ = argmin_{λ>=0} ½λᵀAλ + (Au)ᵀλ``, ``A = G + ρ·tr(G)·I`` (the Gramian of ``[J, √(ρ tr G)·I]``), found
    by enumerating the supports of ``λ`` (KKT on each; the minimiser is unique). float64, T <= 10.

    The ridge is part of UPGrad's and DualProj's definition (``⟨d, g_i⟩ >= -ρ·tr(G)·w_i``): a task whose
    ``‖g_i‖²`` is below ``ρ·tr(G)`` (the ``spread`` family's 1e-8 row) is effectively unconstrained, in
    TorchJD too (its ridge is 1e-4), so the exact, ridge-free projection is not the reference there."""
    J = J.double()
    G = J @ J.T
    T = G.shape[0]
    A = G + rho * float(G.diagonal().sum()) * torch.eye(T, dtype=F64)
    b = A @ u.double()
    scale = float(A.diagonal().max()) * max(1.0, float(u.double().abs().sum()))
    best, best_val = None, float("inf")
    for k in range(T + 1):
        for S in itertools.combinations(range(T), k):
            lam = torch.zeros(T, dtype=F64)
            if S:
                idx = list(S)
                lam[idx] = -torch.linalg.solve(A[idx][:, idx], b[idx])
            grad = A @ lam + b
            if (lam >= -1e-12 * scale).all() and (grad >= -1e-10 * scale).all():
                lam = lam.clamp_min(0)
                val = float(0.5 * lam @ A @ lam + b @ lam)
                if val < best_val:
                    best, best_val = lam, val
    assert best is not None
    return J.T @ (u.double() + best)


# ------------------------------------------------------------------ the conditions, one per method
def check_mgda(J: torch.Tensor) -> None:
    agg = awloss.get("mgda")
    d = _call(agg, J).double()
    P = _present(J)
    J, w = J[P], agg.weights[P].double()
    tol = _tol(J, w)
    assert (w >= -1e-12).all() and abs(float(w.sum()) - 1) <= 1e-5, f"mgda: w ∉ Δ: {w}"
    slack = J.double() @ d - d @ d  # g_iᵀd - ‖d‖²
    assert (slack >= -tol).all(), f"mgda: g_iᵀd < ‖d‖² (not the min-norm point): {slack}, tol {tol:.2g}"
    assert (w * slack <= tol).all(), f"mgda: complementary slackness w_i(g_iᵀd - ‖d‖²) = {w * slack}"


def check_dualproj(J: torch.Tensor) -> None:
    agg = awloss.get("dualproj")
    d = _call(agg, J)
    P = _present(J)
    J, w = J[P], agg.weights[P].double()
    T = J.shape[0]
    tol = _tol(J, w)
    lam = w - 1.0 / T
    Jd = J.double() @ d.double()
    assert (lam >= -1e-6 / T).all(), f"dualproj: dual infeasible, w - 1/T = {lam}"
    assert (Jd >= -tol).all(), f"dualproj: the update conflicts: Jd = {Jd}, tol {tol:.2g}"
    assert (lam.clamp_min(0) * Jd.abs() <= tol).all(), f"dualproj: complementary slackness λ_i(Jd)_i = {lam * Jd}"
    _close(d, project_dual_cone(J, torch.full((T,), 1.0 / T, dtype=F64)), J, w, "dualproj")


def check_upgrad(J: torch.Tensor) -> None:
    agg = awloss.get("upgrad")
    d = _call(agg, J)
    P = _present(J)
    J, w = J[P], agg.weights[P]
    T = J.shape[0]
    ref = sum(project_dual_cone(J, torch.eye(T, dtype=F64)[i] / T) for i in range(T))
    assert (J.double() @ d.double() >= -_tol(J, w)).all(), "upgrad: the update conflicts"
    _close(d, ref, J, w, "upgrad")


def check_cagrad(J: torch.Tensor, c: float = 0.4) -> None:
    agg = awloss.get("cagrad", c=c, rescale=False)
    d = _call(agg, J).double()
    P = _present(J)
    tol = _tol(J[P], agg.weights[P])
    J, w = J[P].double(), agg.weights[P].double()
    T = J.shape[0]
    g0 = J.mean(dim=0)
    r = c * float(g0.norm())
    assert float((d - g0).norm()) <= r * (1 + 1e-6) + tol**0.5 * 1e-3, f"cagrad: ‖d - g₀‖ > c‖g₀‖ = {r}"
    v = w - 1.0 / T
    assert (v >= -1e-6 / T).all(), f"cagrad: weights below 1/T: {w}"
    vs = v.clamp_min(0)
    wstar = vs / vs.sum() if float(vs.sum()) > 0 else torch.full((T,), 1.0 / T, dtype=F64)
    gw = J.T @ wstar
    dual = float(gw @ g0) + r * float(gw.norm())
    primal = float((J @ d).min())
    assert primal <= dual + tol, f"cagrad: weak duality broken ({primal} > {dual}): the check is wrong"
    assert dual - primal <= tol, f"cagrad: duality gap {dual - primal:.3g} > {tol:.3g} (primal {primal}, dual {dual})"


def check_nash_mtl(J: torch.Tensor) -> None:
    agg = awloss.get("nash_mtl", max_norm=0.0)
    _call(agg, J)
    if agg.solver_fallbacks:
        return  # the documented fallback (1/√(T·G_ii) on a first call), counted: allowed
    P = _present(J)
    Jp, a = J[P].double(), agg.weights[P].double()
    G = Jp @ Jp.T
    assert (a > 0).all(), f"nash_mtl: α <= 0: {a}"
    ridge = 1e-9 * G.diagonal()  # the solve runs on G normalised by its diagonal, ridge 1e-9 there
    res = a * (G @ a) - 1  # = -ridge·α² at the regularised solution
    eps = torch.finfo(J.dtype).eps  # α is rounded to the input dtype: (Gδα)_i <= eps·(|G||α|)_i
    slack = 1e-5 + 10 * J.shape[0] * eps * a * (G.abs() @ a) + 2 * ridge * a * a
    assert (res.abs() <= slack).all(), f"nash_mtl: α(Gα) - 1 = {res} (allowed {slack})"


def check_fairgrad(J: torch.Tensor, alpha: float = 1.0) -> None:
    agg = awloss.get("fairgrad", alpha=alpha)
    d = _call(agg, J)
    P = _present(J)
    Jp, w = J[P].double(), agg.weights[P].double()
    if agg.solver_fallbacks:
        assert (w == 0).all() and (d == 0).all(), f"fairgrad: the fallback is w = 0, got {w}"
        m = awloss.get("mgda")
        dm = _call(m, J).double()
        gmax2 = float((Jp**2).sum(dim=1).max())
        assert float(dm @ dm) <= 1e-6 * gmax2, "fairgrad fell back on rows that are not Pareto-stationary"
        return
    G = Jp @ Jp.T
    lhs = w.pow(1.0 / alpha) * (G @ w)
    eps = torch.finfo(J.dtype).eps
    assert (w > 0).all() and (lhs >= 0.5 - 1e-6).all() and (lhs <= 1 + 1e-5 + 100 * J.shape[0] * eps).all(), (
        f"fairgrad: w^(1/a)·(Gw) = {lhs}"
    )


CHECKS = {
    "mgda": check_mgda,
    "dualproj": check_dualproj,
    "upgrad": check_upgrad,
    "cagrad": check_cagrad,
    "nash_mtl": check_nash_mtl,
    "fairgrad": check_fairgrad,
}


def run_check(method: str, J: torch.Tensor) -> None:
    """The method's conditions; with no present row every update is 0 (nothing to optimise)."""
    if not bool(_present(J).any()):
        agg = awloss.get_class(method)._make_example(J.shape[0])
        assert bool((_call(agg, J) == 0).all()), f"{method}: non-zero update for an all-zero Jacobian"
        return
    CHECKS[method](J)


def _family(fam: str, dtype: torch.dtype) -> torch.Tensor:
    J = family(fam).to(dtype)
    if dtype == torch.float32 and fam == "huge":
        J = J / 1e2  # as the degenerate suite: 1e20 rows overflow a float32 Gramian
    return J


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("fam", FAMILIES)
@pytest.mark.parametrize("method", sorted(CHECKS))
def test_optimality_on_degenerate_families(method, fam, dtype):
    run_check(method, _family(fam, dtype))


STRUCTURED = structured()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", STRUCTURED, ids=[c[0] for c in STRUCTURED])
@pytest.mark.parametrize("method", sorted(CHECKS))
def test_optimality_on_stationarity_families(method, case, dtype):
    run_check(method, case[1].to(dtype))


@settings(max_examples=15, deadline=None, derandomize=True)
@given(kind=st.sampled_from(["normal", "strong", "strictly_weak", "non_weak"]), T=st.integers(2, 6),
       n=st.integers(1, 8), rank=st.integers(1, 6), log_scale=st.integers(-12, 12), seed=st.integers(0, 2**16),
       zero=st.booleans(), dup=st.booleans(), f32=st.booleans())
def test_optimality_on_generated_matrices(kind, T, n, rank, log_scale, seed, zero, dup, f32):
    r = min(rank, n, T if kind in ("normal", "non_weak") else T - 1)
    J = sample(kind, T, n, r, seed) * 10.0**log_scale
    if zero:
        J[0] = 0
    if dup and T > 2:
        J[-1] = J[-2]
    J = J.to(torch.float32 if f32 else F64)
    for method in sorted(CHECKS):
        run_check(method, J)


def test_cagrad_certificate_at_large_c():
    """c = 2 moves far from the mean (close to MGDA): the duality certificate still closes."""
    for fam in FAMILIES:
        check_cagrad(_family(fam, F64), c=2.0)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_fairgrad_conditions_for_other_alphas(alpha):
    for fam in FAMILIES:
        check_fairgrad(_family(fam, F64), alpha=alpha)


@pytest.mark.parametrize("fam", ["opposite", "opposite_scaled", "t_greater_than_n"])
def test_fairgrad_returns_zero_on_pareto_stationary_rows(fam):
    """Issue 11 §7: Gw = w^(-1/α) has no positive solution when 0 is in the hull of the rows; old main
    returned the ridge's answer, which conflicted with a task by ~1e-5·|g|² (TorchJD's by 1.6e-4·|g|²)."""
    J = _family(fam, F64)
    agg = awloss.get("fairgrad")
    d = _call(agg, J)
    assert bool((J @ d >= 0).all()), f"fairgrad conflicts on {fam}: {J @ d}"
    assert float(d.norm()) == 0.0 and agg.solver_fallbacks == 1


def test_fairgrad_near_stationary_rows_keep_the_exact_answer():
    """The fallback is for rows with no solution only: two nearly (not exactly) opposite rows still get
    the positive solution of Gw = 1/w, not 0."""
    v = torch.randn(6, dtype=F64, generator=torch.Generator().manual_seed(3))
    u = torch.randn(6, dtype=F64, generator=torch.Generator().manual_seed(4))
    J = torch.stack([v, -v + 1e-2 * u])
    agg = awloss.get("fairgrad")
    d = _call(agg, J)
    assert agg.solver_fallbacks == 0 and float(d.norm()) > 0
    lhs = agg.weights * (J @ J.T @ agg.weights)  # = 1 - ridge·w² (6e-6 here): the documented 1e-9 ridge
    torch.testing.assert_close(lhs, torch.ones(2, dtype=F64), rtol=1e-4, atol=0)


@pytest.mark.parametrize("rescale", [False, True])
def test_cagrad_single_task_moves_c_further_along_it(rescale):
    """Found by the duality certificate: old main returned g for one task (a shortcut), where CAGrad's
    d = g₀ + c‖g₀‖·g_w/‖g_w‖ is (1 + c)·g, as TorchJD returns; with ``rescale`` divided by 1 + c²."""
    tja = pytest.importorskip("torchjd.aggregation")
    J = torch.tensor([[0.3, -1.2, 2.0]], dtype=F64)
    d = awloss.get("cagrad", c=0.4, rescale=rescale)(J)
    ref = tja.CAGrad(c=0.4)(J) / (1 + 0.4**2 if rescale else 1.0)
    torch.testing.assert_close(d, ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(d, J[0] * 1.4 / (1.16 if rescale else 1.0))
