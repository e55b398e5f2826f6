"""Our aggregators against the reference implementations on random Gramians.

Anchors: TorchJD (PyPI ``torchjd``, with its quadprog/cvxpy extras) for most methods, and cvxpy for
the exact solvers. They are test-only extras (``pip install 'awloss[test]'``); without them these
tests are skipped with the reason shown by ``pytest -ra``.

Inputs are float64 Jacobians with T = 2, 3, 10 tasks in three regimes: well conditioned (iid rows),
ill conditioned (row scales from 1 to 1e-3 on top of a shared component) and rank deficient
(T rows in a space of dimension ceil(T/2)). The default run covers one representative case per
method; the full sweep is marked slow.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import awloss

tja = pytest.importorskip("torchjd.aggregation", reason="anchor `torchjd` not installed: pip install 'awloss[test]'")

KINDS = ("well", "ill", "rank")
TASKS = (2, 3, 10)


def make_jacobian(T: int, kind: str, n: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 100 * T + {"well": 0, "ill": 1, "rank": 2}[kind])
    if kind == "well":
        return torch.randn(T, n, generator=g, dtype=torch.float64)
    if kind == "ill":
        J = torch.randn(T, n, generator=g, dtype=torch.float64) * torch.logspace(0, -3, T, dtype=torch.float64)[:, None]
        return J + 0.5 * torch.randn(1, n, generator=g, dtype=torch.float64)
    r = (T + 1) // 2
    return torch.randn(T, r, generator=g, dtype=torch.float64) @ torch.randn(r, n, generator=g, dtype=torch.float64)


def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def _nash_anchor(J):
    ref = tja.NashMTL(n_tasks=J.shape[0], max_norm=0.0)
    out = None
    for _ in range(8):  # TorchJD's sequential convex solver converges over calls (warm start)
        out = _quiet(ref, J)
    return out


# name -> (our kwargs, anchor factory, rtol on the update relative to its largest entry)
ANCHORS = {
    "grad_mean": ({}, lambda J: tja.Mean()(J), 1e-12),
    "grad_sum": ({}, lambda J: tja.Sum()(J), 1e-12),
    "upgrad": ({"reg": 1e-4}, lambda J: _quiet(tja.UPGrad(), J), 1e-6),  # TorchJD's ridge
    "dualproj": ({"reg": 1e-4}, lambda J: _quiet(tja.DualProj(), J), 1e-6),
    "imtl_g": ({}, lambda J: tja.IMTLG()(J), 1e-6),
    "aligned_mtl": ({}, lambda J: tja.AlignedMTL()(J), 1e-6),
    "config": ({}, lambda J: tja.ConFIG()(J), 1e-6),
    "cagrad": ({"c": 0.4, "rescale": False}, lambda J: _quiet(tja.CAGrad(c=0.4), J), 1e-4),
    "nash_mtl": ({"max_norm": 0.0}, _nash_anchor, 1e-3),
}
REPRESENTATIVE = {  # the default run: one case per method (the slow sweep covers the rest)
    "grad_mean": (3, "well"), "grad_sum": (3, "well"), "upgrad": (10, "ill"), "dualproj": (3, "rank"),
    "imtl_g": (10, "well"), "aligned_mtl": (3, "ill"), "config": (10, "well"), "cagrad": (10, "ill"),
    "nash_mtl": (3, "well"),
}
FULL = [(n, T, k) for n in ANCHORS for T in TASKS for k in KINDS if (T, k) != REPRESENTATIVE[n]]
SKIP_RANK = {"nash_mtl"}  # Gα = 1/α has no solution for dependent gradients (TorchJD's solver fails too)


def _compare(name, T, kind):
    if kind == "rank" and name in SKIP_RANK:
        pytest.skip(f"{name}: no bargaining solution for rank-deficient gradients")
    J = make_jacobian(T, kind)
    kwargs, anchor, rtol = ANCHORS[name]
    ours = awloss.get(name, **kwargs)(J)
    ref = anchor(J)
    scale = ref.abs().max().clamp_min(1e-12)
    err = float((ours - ref).abs().max() / scale)
    assert err <= rtol, f"{name} T={T} {kind}: relative error {err:.2e} > {rtol:.0e}"


@pytest.mark.parametrize("name", sorted(ANCHORS))
def test_matches_torchjd_representative(name):
    _compare(name, *REPRESENTATIVE[name])


@pytest.mark.slow
@pytest.mark.parametrize(("name", "T", "kind"), FULL)
def test_matches_torchjd_sweep(name, T, kind):
    _compare(name, T, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_pcgrad_and_gradvac_match_torchjd_for_two_tasks(kind):
    # With two tasks the visiting order is fixed, so the random order cannot differ between libraries.
    J = make_jacobian(2, kind) * torch.tensor([[1.0], [-1.0]], dtype=torch.float64)  # make them conflict
    torch.testing.assert_close(awloss.get("pcgrad")(J), tja.PCGrad()(J))
    ours, ref = awloss.get("gradvac"), tja.GradVac()
    for step in range(4):  # the EMA state evolves identically
        Jk = J + 0.3 * make_jacobian(2, "well", seed=step)
        torch.testing.assert_close(ours(Jk), ref(Jk))


@pytest.mark.parametrize("T", [3, 10])
def test_graddrop_matches_torchjd_under_the_same_seed(T):
    J = make_jacobian(T, "well")
    torch.manual_seed(7)
    ours = awloss.get("graddrop")(J)
    torch.manual_seed(7)
    ref = tja.GradDrop()(J)
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("T", TASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_mgda_is_the_exact_min_norm_point(T, kind):
    """MGDA against cvxpy's exact QP, and no worse than TorchJD's Frank-Wolfe (which stops early)."""
    cp = pytest.importorskip("cvxpy", reason="anchor `cvxpy` not installed: pip install 'awloss[test]'")
    J = make_jacobian(T, kind)
    G = (J @ J.T).numpy()
    w = cp.Variable(T)
    problem = cp.Problem(cp.Minimize(cp.quad_form(w, cp.psd_wrap(G / G.trace()))), [w >= 0, cp.sum(w) == 1])
    problem.solve(solver=cp.CLARABEL)
    best = problem.value * G.trace()
    ours = awloss.get("mgda")(J)
    norm2 = float(ours @ ours)
    assert norm2 <= best * (1 + 1e-6) + 1e-9 * G.trace()
    fw = tja.MGDA()(J)
    assert norm2 <= float(fw @ fw) * (1 + 1e-9) + 1e-12 * G.trace()


@pytest.mark.parametrize("T", [3, 10])
def test_cagrad_dual_matches_cvxpy(T):
    cp = pytest.importorskip("cvxpy", reason="anchor `cvxpy` not installed: pip install 'awloss[test]'")
    J = make_jacobian(T, "ill")
    Jn = (J / J.norm()).numpy()
    g0 = Jn.mean(axis=0)
    r = 0.4 * float((g0**2).sum() ** 0.5)
    w = cp.Variable(T)
    cp.Problem(cp.Minimize((Jn @ g0) @ w + r * cp.norm(Jn.T @ w)), [w >= 0, cp.sum(w) == 1]).solve(solver=cp.CLARABEL)
    gw = Jn.T @ w.value
    ref = torch.from_numpy(g0 + r * gw / (gw**2).sum() ** 0.5) * J.norm()
    ours = awloss.get("cagrad", rescale=False)(J)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
