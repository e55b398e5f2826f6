"""The contract every gradient-level method honours; a new registered aggregator joins automatically."""

from __future__ import annotations

import pytest
import torch

import awloss
from awloss.aggregation import Aggregator, GramianAggregator, SolverError

AGGREGATORS = awloss.available("aggregator")
NUM_TASKS = [1, 2, 5]


def make(name: str, num_tasks: int) -> Aggregator:
    return awloss.get_class(name)._make_example(num_tasks)


def jacobian(num_tasks: int, n: int = 7, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(num_tasks, n, dtype=dtype)


def test_registry_holds_every_aggregator_of_the_issue():
    expected = {"mgda", "pcgrad", "cagrad", "imtl_g", "nash_mtl", "graddrop", "gradvac", "aligned_mtl", "upgrad",
                "dualproj", "config", "dbmtl", "grad_mean", "grad_sum"}
    assert expected <= set(AGGREGATORS)
    for name in AGGREGATORS:
        cls = awloss.get_class(name)
        assert issubclass(cls, Aggregator) and cls.kind == "aggregator"
        assert name not in awloss.available("weighting")


@pytest.mark.parametrize("num_tasks", NUM_TASKS)
@pytest.mark.parametrize("name", AGGREGATORS)
def test_finite_update_equal_to_weights_times_jacobian(name, num_tasks):
    agg = make(name, num_tasks)
    J = jacobian(num_tasks)
    out = agg(J)
    assert out.shape == (7,) and torch.isfinite(out).all()
    if agg.weighted:
        w = agg.weights
        assert w.shape == (num_tasks,) and not w.requires_grad and torch.isfinite(w).all()
        torch.testing.assert_close(out, w @ J, rtol=1e-5, atol=1e-6)
    if isinstance(agg, GramianAggregator):  # the Gramian route gives the same weights
        fresh, again = make(name, num_tasks), make(name, num_tasks)
        torch.manual_seed(3)
        w_gramian = fresh.gramian_weights(J @ J.T)
        torch.manual_seed(3)
        again(J)
        torch.testing.assert_close(w_gramian, again.weights)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_trailing_dimensions_are_kept(name):
    agg, ref = make(name, 3), make(name, 3)
    J = torch.randn(3, 2, 5)
    torch.manual_seed(0)
    out = agg(J)
    assert out.shape == (2, 5)
    torch.manual_seed(0)
    torch.testing.assert_close(out, ref(J.reshape(3, -1)).reshape(2, 5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", AGGREGATORS)
def test_dtype_is_kept(name, dtype):
    agg = make(name, 3)
    out = agg(jacobian(3, dtype=dtype))
    assert out.dtype == dtype
    if agg.weighted:
        assert agg.weights.dtype == dtype


@pytest.mark.parametrize("name", AGGREGATORS)
def test_state_dict_round_trip_resumes_exactly(name):
    Js = [jacobian(4) for _ in range(4)]
    a = make(name, 4)
    for J in Js[:2]:
        a(J)
    b = make(name, 4)
    b.load_state_dict(a.state_dict())
    for J in Js[2:]:
        torch.manual_seed(11)
        ua = a(J)
        torch.manual_seed(11)
        ub = b(J)
        torch.testing.assert_close(ua, ub, rtol=0, atol=0)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_deterministic_under_a_seed_and_reset_restores(name):
    Js = [jacobian(3) for _ in range(3)]
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        agg = make(name, 3)
        runs.append([agg(J) for J in Js])
    for x, y in zip(*runs):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    agg.reset()
    torch.manual_seed(5)
    torch.testing.assert_close(agg(Js[0]), runs[0][0], rtol=0, atol=0)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_degenerate_inputs(name):
    agg = make(name, 3)
    assert torch.equal(agg(torch.zeros(3, 6)), torch.zeros(6)), "zero gradients must give a zero update"
    g = torch.randn(1, 6)
    out = make(name, 3)(g.repeat(3, 1))  # identical gradients: a multiple of g, finite
    assert torch.isfinite(out).all()
    assert torch.linalg.matrix_rank(torch.stack([out, g[0]])) <= 1
    one = make(name, 1)(g)  # one task
    assert torch.isfinite(one).all() and torch.linalg.matrix_rank(torch.stack([one, g[0]])) <= 1
    big = make(name, 64)(torch.randn(64, 100))  # T = 64
    assert big.shape == (100,) and torch.isfinite(big).all()


@pytest.mark.parametrize("name", AGGREGATORS)
def test_bad_input_raises_clear_errors(name):
    agg = make(name, 3)
    J = torch.randn(3, 4)
    J[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"task 1 \(row 1"):
        agg(J)
        agg.verify()  # deferred: the flag of the call is read here (or at the next call)
    with pytest.raises(ValueError, match="one row per task"):
        agg(torch.randn(4))
    with pytest.raises(TypeError, match="floating point"):
        agg(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="must be a Tensor"):
        agg([[1.0, 2.0]])
    with pytest.raises(ValueError, match="no rows"):
        agg(torch.zeros(0, 3))


def test_gramian_entry_point_validates():
    agg = awloss.get("upgrad")
    with pytest.raises(ValueError, match="square"):
        agg.gramian_weights(torch.ones(2, 3))
    G = torch.eye(3)
    G[2, 2] = float("inf")
    with pytest.raises(ValueError, match="task 2"):
        agg.gramian_weights(G)
        agg.verify()


def test_solver_failure_falls_back_counted_and_warned_once(monkeypatch):
    """Policy: a finite Gramian never raises; an uncertified solve uses the documented safe answer (here the
    mean gradient), is counted in `solver_fallbacks` and warned once."""
    from awloss.aggregation import SolverFallbackWarning, _upgrad

    def broken(A, b, **kw):
        return torch.zeros_like(b), torch.zeros(b.shape[0], dtype=torch.bool)

    monkeypatch.setattr(_upgrad, "nnqp", broken)
    agg = awloss.get("upgrad")
    J = torch.randn(3, 5)
    with pytest.warns(SolverFallbackWarning, match="UPGrad: the dual-cone projection QP could not certify"):
        out = agg(J)
        agg.verify()  # the fallback flag is read with the deferred checks (or at the next call)
    torch.testing.assert_close(out, J.mean(dim=0))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per instance
        agg(J)
    assert agg.solver_fallbacks == 2
    agg.reset()
    assert agg.solver_fallbacks == 0
    agg.check = False  # no host read on accelerators: still counted
    with pytest.warns(SolverFallbackWarning):  # the fallback flag is still read (one call late, no host sync)
        agg(J)
        agg(J)
    assert agg.solver_fallbacks == 2


def test_constructor_arguments_are_validated():
    with pytest.raises(ValueError, match="`c` must be >= 0"):
        awloss.get("cagrad", c=-1.0)
    with pytest.raises(ValueError, match="`beta` must be in"):
        awloss.get("gradvac", beta=2.0)
    with pytest.raises(ValueError, match="`normalize`"):
        awloss.get("mgda", normalize="loss")
    with pytest.raises(ValueError, match="`scale_mode`"):
        awloss.get("aligned_mtl", scale_mode="max")
    with pytest.raises(ValueError, match="`update_weights_every` must be >= 1"):
        awloss.get("nash_mtl", update_weights_every=0)
    with pytest.raises(ValueError, match="`leak` must be in"):
        awloss.get("graddrop", leak=1.5)
    with pytest.raises(ValueError, match="`reduction`"):
        awloss.get("pcgrad", reduction="max")


def test_non_weighted_aggregators_say_so():
    agg = awloss.get("graddrop")
    agg(torch.randn(2, 3))
    with pytest.raises(RuntimeError, match="not a weighted aggregator"):
        _ = agg.weights
    with pytest.raises(RuntimeError, match="only after the first call"):
        _ = awloss.get("mgda").weights


@pytest.mark.parametrize("name", AGGREGATORS)
def test_output_and_weights_are_detached(name):
    """Issue 11 §1: old main kept the autograd graph through the solvers (`upgrad(torch.ones(3, 5,
    requires_grad=True)).requires_grad` was True); the weights are a non-differentiable choice."""
    for J in (torch.ones(3, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True)):
        agg = make(name, 3)
        out = agg(J)
        assert not out.requires_grad and out.grad_fn is None
        if agg._weights is not None:
            assert not agg._weights.requires_grad


@pytest.mark.parametrize("position", [0, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", AGGREGATORS)
def test_a_zero_row_is_left_out(name, dtype, position):
    """Issue 11 §2: a zero row (a task absent from the batch, or one that does not reach the shared
    parameters) is left out of the solve: weight 0, and the other tasks get exactly what T - 1 tasks get.
    Old main: MGDA returned 0, Nash-MTL / CAGrad reported weights of 1e4-2e5 for the zero row."""
    cls = awloss.get_class(name)
    J = torch.randn(3, 7, dtype=dtype, generator=torch.Generator().manual_seed(1))
    Jz = torch.cat([J[:position], torch.zeros(1, 7, dtype=dtype), J[position:]])
    keep = [i for i in range(4) if i != position]
    if cls.zero_rows in ("kept", "own"):  # documented: the zero row is used as it is, or by the method's own solve
        agg = make(name, 4)
        out = agg(Jz)
        assert torch.isfinite(out).all()
        if agg.weighted:
            torch.testing.assert_close(out, agg.weights[keep] @ J)
        return
    assert cls.zero_rows == "left_out"
    torch.manual_seed(0)
    ref_agg = make(name, 3)
    ref = ref_agg(J)
    torch.manual_seed(0)
    agg = make(name, 3)  # the same hyper-parameters, given one more (zero) row
    out = agg(Jz)
    torch.testing.assert_close(out, ref)
    if agg._weights is not None:
        assert float(agg._weights[position]) == 0.0
        torch.testing.assert_close(agg._weights[keep], ref_agg._weights)
    two = make(name, 2)(torch.stack([J[0], torch.zeros(7, dtype=dtype)]))  # one task left: along its gradient
    cos = torch.nn.functional.cosine_similarity(two.double(), J[0].double(), dim=0)
    assert float(two.norm()) > 0 and float(cos.abs()) > 1 - 1e-5
