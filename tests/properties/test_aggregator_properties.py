"""Property tests (hypothesis) over the registered gradient-level methods."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import awloss

AGGREGATORS = awloss.available("aggregator")
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def jacobians(draw, min_tasks=1, max_tasks=6, nonneg=False):
    T = draw(st.integers(min_tasks, max_tasks))
    n = draw(st.integers(T, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    log_spread = draw(st.floats(0.0, 3.0))  # row scales spread over up to three decades
    shared = draw(st.floats(0.0, 2.0))  # a common component makes the rows correlated
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(T, n, generator=g, dtype=torch.float64)
    J = J + shared * torch.randn(1, n, generator=g, dtype=torch.float64)
    J = J * torch.logspace(0, -log_spread, T, dtype=torch.float64)[:, None]
    return J.abs() if nonneg else J


def run(name, J, seed=0, **kw):
    torch.manual_seed(seed)
    agg = awloss.get_class(name)._make_example(J.shape[0]) if not kw else awloss.get(name, **kw)
    out = agg(J)
    return out, (agg._weights if agg._weights is not None else None)


@pytest.mark.parametrize("name", AGGREGATORS)
@SETTINGS
@given(J=jacobians(min_tasks=2), data=st.data())
def test_permutation_equivariance(name, J, data):
    if not awloss.get_class(name).permutation_equivariant:
        pytest.skip(f"{name} draws a random order or mask per call (permutation_equivariant=False)")
    perm = data.draw(st.permutations(range(J.shape[0])))
    out_a, w_a = run(name, J)
    out_b, w_b = run(name, J[list(perm)])
    torch.testing.assert_close(out_a, out_b, rtol=1e-6, atol=1e-9 * float(J.abs().max()))
    if w_a is not None:
        torch.testing.assert_close(w_a[list(perm)], w_b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", [n for n in AGGREGATORS if awloss.get_class(n).conflict_free])
@SETTINGS
@given(J=jacobians())
def test_no_conflict_with_any_task(name, J):
    d, w = run(name, J)
    dots = J @ d
    tr = float((J * J).sum())
    tol = 2e-8 * tr * w.abs() + 1e-10 * tr  # the 1e-8 ridge on the trace-normalised Gramian, plus round-off
    assert (dots >= -tol).all(), f"{name}: ⟨d, g_i⟩ = {dots.tolist()}"


@SETTINGS
@given(J=jacobians(nonneg=True), seed=st.integers(0, 100))
def test_pcgrad_is_the_plain_sum_without_conflicts(J, seed):
    out, w = run("pcgrad", J, seed)
    torch.testing.assert_close(w, torch.ones_like(w))
    torch.testing.assert_close(out, J.sum(dim=0))


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
@SETTINGS
@given(J=jacobians(nonneg=True))
def test_dual_cone_methods_return_the_mean_without_conflicts(name, J):
    out, _ = run(name, J)
    ref = J.mean(dim=0)
    assert float((out - ref).norm()) <= 1e-3 * float(ref.norm())  # up to the 1e-4 ridge


@SETTINGS
@given(J=jacobians())
def test_mgda_returns_the_min_norm_point_of_the_hull(J):
    _, w = run("mgda", J)
    G = J @ J.T
    assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-9
    Gw, val = G @ w, float(w @ G @ w)
    tol = 1e-6 * float(G.diagonal().max())
    assert (Gw >= val - tol).all(), "KKT: no vertex direction decreases the norm"
    assert ((Gw - val).abs()[w > 1e-9] <= tol).all(), "KKT: equal on the support"


# Their weights follow a step whose size depends on the gradients' scale, as in the papers: MoCo's, MoDo's
# and ExcessMTL's weight steps (γ·YYᵀλ, γ·GΛ, η·excess risk), SDMGrad's 1e-8 in its normalisation.
SCALE_DEPENDENT = {"moco", "modo", "excess_mtl", "sdmgrad"}


@pytest.mark.parametrize("name", AGGREGATORS)
@SETTINGS
@given(J=jacobians(), log_c=st.floats(-3, 3))
def test_scaling_behaviour(name, J, log_c):
    """Every method is positively homogeneous of degree 1 (update scales with J) except Nash-MTL, whose
    update is scale invariant (α ∝ 1/c), and MGDA-style weights never change with the scale."""
    c = 10.0**log_c
    kw = {"eps": 0.0} if name == "pcd" else {}  # PCD's eps under the norm averages breaks exact homogeneity
    out, w = run(name, J, **kw)
    out_c, w_c = run(name, c * J, **kw)
    if name in SCALE_DEPENDENT:
        assert torch.isfinite(out_c).all() and (w_c is None or torch.isfinite(w_c).all())
        return
    if name == "nash_mtl":
        assert torch.isfinite(out_c).all() and float(out_c.norm()) <= 1.0 + 1e-6  # clipped to max_norm = 1
        out_n, _ = run(name, J, max_norm=0.0)
        out_nc, _ = run(name, c * J, max_norm=0.0)
        torch.testing.assert_close(out_nc, out_n, rtol=1e-6, atol=1e-9 * float(out_n.abs().max()))
        return
    rtol = 1e-6
    if name == "fairgrad":  # Gw = w^(-1/α): w scales as c^(-2α/(1+α)), the update as c^((1-α)/(1+α))
        alpha = awloss.get_class(name)._make_example(J.shape[0]).alpha
        k = c ** ((1 - alpha) / (1 + alpha))
        torch.testing.assert_close(out_c, k * out, rtol=1e-5, atol=1e-9 * k * float(out.abs().max()))
        return
    torch.testing.assert_close(out_c, c * out, rtol=rtol, atol=1e-9 * c * float(J.abs().max()))
    if w is not None:
        torch.testing.assert_close(w_c, w, rtol=rtol, atol=1e-9)


@SETTINGS
@given(J=jacobians(min_tasks=2))
def test_imtl_g_has_equal_projections_on_every_task(J):
    d, _ = run("imtl_g", J)
    proj = (J / J.norm(dim=1, keepdim=True)) @ d
    torch.testing.assert_close(proj, proj.mean().expand_as(proj), rtol=1e-5, atol=1e-8 * float(d.norm()))


@SETTINGS
@given(J=jacobians())
def test_cagrad_interpolates_between_mean_and_conflict_averse(J):
    out0, _ = run("cagrad", J, c=0.0)
    torch.testing.assert_close(out0, J.mean(dim=0))
    d, _ = run("cagrad", J, c=0.4, rescale=False)  # the worst task improves at least as much as with the mean
    assert float((J @ d).min()) >= float((J @ J.mean(dim=0)).min()) - 1e-9 * float(J.abs().max()) ** 2


@SETTINGS
@given(J=jacobians(min_tasks=2))
def test_nash_mtl_solves_the_bargaining_equation(J):
    torch.manual_seed(0)
    agg = awloss.get("nash_mtl", max_norm=0.0)
    agg(J)
    a = agg.weights
    G = J @ J.T
    ridge = 1e-9 * G.diagonal() * a  # the solver's ridge on G normalised by its diagonal (dependent gradients)
    assert ((G @ a - 1.0 / a).abs() <= 1e-6 / a + 2 * ridge).all()
