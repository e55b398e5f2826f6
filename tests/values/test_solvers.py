"""The on-device solvers: exactness, and the fixed-iteration (accelerator) code path run on the CPU."""

from __future__ import annotations

import pytest
import torch

from awloss.aggregation import _solvers as S


def gramian(T, kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "rank":
        J = torch.randn(T, max(1, T // 2), generator=g, dtype=torch.float64) @ torch.randn(
            max(1, T // 2), 30, generator=g, dtype=torch.float64)
    else:
        J = torch.randn(T, 30, generator=g, dtype=torch.float64)
        if kind == "ill":
            J = J * torch.logspace(0, -3, T, dtype=torch.float64)[:, None] + 0.5 * J[:1]
    return J @ J.T


CASES = [(T, k, s) for T in (2, 3, 10, 32) for k in ("well", "ill", "rank") for s in range(3)]


@pytest.mark.parametrize(("T", "kind", "seed"), CASES)
def test_sync_free_path_gives_the_same_answers(T, kind, seed, monkeypatch):
    """On accelerators the loops run a fixed number of iterations without host checks."""
    G = gramian(T, kind, seed)
    A = S.normalize_gramian(G, 1e-8)
    B = torch.eye(T, dtype=torch.float64) @ A / T
    fast = [S.nnqp(A, B), S.min_norm_simplex(G), S.cagrad_dual(G, 0.4), S.nash_bargaining(G / G.norm())]
    monkeypatch.setattr(S, "_can_stop_early", lambda t: False)
    slow = [S.nnqp(A, B), S.min_norm_simplex(G), S.cagrad_dual(G, 0.4), S.nash_bargaining(G / G.norm())]
    for i, ((xf, okf), (xs, oks)) in enumerate(zip(fast, slow)):
        if i == 3 and kind == "rank":
            continue  # no bargaining solution without the ridge; both paths are flagged or not alike
        assert bool(okf.all()) and bool(oks.all()), f"solver {i} not converged"
        torch.testing.assert_close(xs, xf, rtol=1e-7, atol=1e-9 * float(xf.abs().max()))


@pytest.mark.parametrize("T", [2, 5, 10, 32])
def test_nnqp_meets_kkt(T):
    for seed in range(5):
        G = gramian(T, "rank", seed)
        A = S.normalize_gramian(G, 1e-8)
        b = torch.randn(4, T, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        x, ok = S.nnqp(A, b)
        assert bool(ok.all()) and (x >= 0).all()
        grad = x @ A + b
        assert (grad >= -1e-8).all() and ((grad.abs() <= 1e-8) | (x == 0)).all()


def test_project_simplex():
    v = torch.tensor([[0.2, 0.3, 0.5], [2.0, 0.0, 0.0], [-1.0, 0.5, 0.6]])
    p = S.project_simplex(v)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(p[0], v[0])
    torch.testing.assert_close(p[1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(p[2], torch.tensor([0.0, 0.45, 0.55]))


def test_cagrad_falls_back_to_the_homotopy_when_the_active_set_cycles(monkeypatch):
    calls = []
    real = S._cagrad_homotopy

    def counting(*args):
        out = real(*args)
        calls.append(bool(out[1]))
        return out

    monkeypatch.setattr(S, "_cagrad_homotopy", counting)
    for seed in range(120):  # rank-deficient systems make the primal-dual active set cycle now and then
        g = torch.Generator().manual_seed(seed)
        J = torch.randn(10, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 50, generator=g, dtype=torch.float64)
        _, ok = S.cagrad_dual(J @ J.T, 0.4)
        assert bool(ok), f"seed {seed}"
    assert calls and all(calls), "the homotopy was exercised and converged every time"


# ---------------------------------------------------------------- issue 11 §1: solvers on real inputs
import warnings  # noqa: E402

import awloss  # noqa: E402
from awloss.aggregation import SolverFallbackWarning  # noqa: E402

SOLVER_METHODS = ["mgda", "nash_mtl", "upgrad", "dualproj", "cagrad"]


def _no_fallback(name, J, agg=None):
    agg = awloss.get(name) if agg is None else agg
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverFallbackWarning)
        out = agg(J)
    assert agg.solver_fallbacks == 0
    return out, agg


@pytest.mark.parametrize("name", SOLVER_METHODS)
def test_float32_jacobians_are_solved_exactly(name):
    """Old main: MGDA raised SolverError on 102/200 random float32 5x2 Jacobians, Nash-MTL 115, UPGrad 34,
    DualProj 23 (the float32 Gramian is indefinite by round-off); now the Gramian is built in float64."""
    for i in range(60):
        J = torch.randn(5, 2, generator=torch.Generator().manual_seed(i))
        out, _ = _no_fallback(name, J)
        if name == "nash_mtl":  # T > n: α ~ 1/√ridge on the null space, so wᵀJ in float32 is only finite
            assert torch.isfinite(out).all()
            continue
        ref = awloss.get(name)(J.double())
        assert float((out.double() - ref).norm()) <= 1e-4 * float(J.double().norm(dim=1).max()), i


def test_mgda_float32_is_the_min_norm_point():
    """Issue 11's case: with check=False old main returned an update ten times the min-norm one."""
    J = torch.randn(3, 2, generator=torch.Generator().manual_seed(8))
    agg = awloss.get("mgda")
    agg.check = False
    out = agg(J)
    torch.testing.assert_close(out.double(), awloss.get("mgda")(J.double()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", SOLVER_METHODS)
def test_rank_one_conflicting_tasks(name, dtype):
    """One shared scalar, targets 0.5 / 1 / 2 for scale·x: parallel, partly opposite gradients (rank-1 G).
    Old main: Nash-MTL raised at step 5 (float32 and float64); MGDA/UPGrad/DualProj raised on random
    rank-1 float32 Jacobians. MGDA's answer there is 0, UPGrad's and DualProj's the projection (0 too)."""
    s = torch.nn.Parameter(torch.tensor(0.3, dtype=dtype))
    opt = torch.optim.SGD([s], lr=0.05)
    agg = awloss.get(name)
    x = torch.linspace(-1, 1, 8, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverFallbackWarning)
        for _ in range(60):
            opt.zero_grad()
            awloss.backward([((s * x - t * x) ** 2).mean() for t in (0.5, 1.0, 2.0)], [s], aggregator=agg)
            opt.step()
    assert agg.solver_fallbacks == 0 and torch.isfinite(s)
    J = torch.tensor([[1.0], [0.5], [-2.0]], dtype=dtype)  # conflicting, all parallel
    out, _ = _no_fallback(name, J)
    if name in ("mgda", "upgrad", "dualproj"):
        assert float(out.abs().max()) <= 1e-6, f"{name}: {out}"
    for i in range(30):  # random rank-1 Jacobians with mixed signs
        g = torch.Generator().manual_seed(i)
        J = (torch.randn(4, 1, generator=g) * torch.randn(1, 20, generator=g)).to(dtype)
        out, _ = _no_fallback(name, J)
        if name in ("mgda", "upgrad", "dualproj") and not ((J[:, 0] > 0).all() or (J[:, 0] < 0).all()):
            assert float(out.norm()) <= 1e-5 * float(J.norm(dim=1).max()), (name, i)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cagrad_certifies_pareto_stationary_points(dtype):
    """At g₁ ≈ −g₂ the radius r² → 0 and the purely relative test |vᵀAv − r²| <= 1e-6·r² rejected right
    answers (old main: SolverError); the test is now relative + absolute."""
    for i in range(100):
        g = torch.Generator().manual_seed(i)
        v = torch.randn(6, generator=g, dtype=torch.float64)
        J = torch.stack([v, -v * (1 + 1e-9 * i)]).to(dtype)
        out, _ = _no_fallback("cagrad", J)
        assert float(out.norm()) <= 1e-5 * float(v.norm())


def test_nash_mtl_retries_cold_when_the_warm_start_fails():
    """A jump of the gradients (rows rescaled by 1e-4 / 1 / 1e3): old main's warm start failed on 200/200
    such pairs while the same G solved from scratch converged; now the cold start runs alongside."""
    for i in range(20):
        g = torch.Generator().manual_seed(i)
        J1 = torch.randn(3, 6, generator=g, dtype=torch.float64)
        J2 = torch.randn(3, 6, generator=g, dtype=torch.float64) * torch.tensor([[1e-4], [1.0], [1e3]]).double()
        agg = awloss.get("nash_mtl", max_norm=0.0)
        agg(J1)
        _no_fallback("nash_mtl", J2, agg)
        a = agg.weights
        G = J2 @ J2.T
        ridge = 1e-9 * G.diagonal() * a  # the solver's ridge (see test_aggregator_properties)
        assert ((G @ a - 1 / a).abs() <= 1e-6 / a + 2 * ridge).all()


@pytest.mark.parametrize("scale", [1e-5, 1e-8, 1e5])
def test_nash_mtl_bargains_for_a_task_of_another_scale(scale):
    """Found by the aggregator long runs (issue 11 §7): the solver's ridge was relative to the mean of diag(G),
    so a task 1e-5 times smaller than the others was swamped by it and its share αᵢ(Gα)ᵢ (1 for every task at
    the bargaining solution Gα = 1/α) fell to 0.2 (1e-5) or 1e-5 (1e-8), with the solver reporting success.
    Nash-MTL is scale invariant (αᵢ ∝ 1/‖gᵢ‖): the solve now runs on G normalised by its diagonal."""
    g = torch.Generator().manual_seed(0)
    J = torch.randn(3, 6, generator=g, dtype=torch.float64) * torch.tensor([[1.0], [1.0], [scale]]).double()
    for dtype in (torch.float64, torch.float32):
        agg = awloss.get("nash_mtl", max_norm=0.0)
        _no_fallback("nash_mtl", J.to(dtype), agg)
        a = agg.weights.double()
        share = a * (J @ J.T @ a)
        torch.testing.assert_close(share, torch.ones(3, dtype=torch.float64), rtol=1e-4, atol=0)


def test_nash_mtl_falls_back_to_the_last_certified_weights(monkeypatch):
    agg = awloss.get("nash_mtl", max_norm=0.0)
    J = torch.randn(3, 5, dtype=torch.float64)
    agg(J)
    last = agg.alpha.clone()
    real = S.nash_bargaining
    from awloss.aggregation import _nash_mtl

    monkeypatch.setattr(_nash_mtl, "nash_bargaining", lambda *a, **k: (real(*a, **k)[0], torch.tensor(False)))
    with pytest.warns(SolverFallbackWarning, match="bargaining solver"):
        agg(torch.randn(3, 5, dtype=torch.float64))
        agg.verify()  # the fallback flag is read with the deferred checks
    torch.testing.assert_close(agg.weights, last)
    assert agg.solver_fallbacks == 1


def test_low_precision_gramian_gets_a_rounding_ridge():
    """`gramian_weights` with a float32 Gramian (what awloss.backward builds): no failure either."""
    for i in range(30):
        J = torch.randn(5, 2, generator=torch.Generator().manual_seed(i))
        for name in SOLVER_METHODS:
            agg = awloss.get(name)
            with warnings.catch_warnings():
                warnings.simplefilter("error", SolverFallbackWarning)
                w = agg.gramian_weights(J @ J.T)
            assert torch.isfinite(w).all() and agg.solver_fallbacks == 0
    assert S.rounding_ridge(torch.float64, 5) == 0.0 and S.rounding_ridge(torch.float32, 5) > 0


def test_gramian_is_built_in_float64_by_blocks(monkeypatch):
    J = torch.randn(3, 50)
    monkeypatch.setattr(S, "_CHUNK", 16)
    G = S.gramian(J)
    assert G.dtype == torch.float64
    torch.testing.assert_close(G, J.double() @ J.double().T)
