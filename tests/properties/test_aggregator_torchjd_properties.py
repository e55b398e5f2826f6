"""TorchJD-style property checks for every registered aggregator, on generated matrix families (issue 11 §7).

The properties are those TorchJD's suite asserts (its ``_asserts.py``); the checks and the matrices
(``_matrices.py``: normal, strongly stationary, strictly weakly stationary, non weakly stationary, scaled)
are ours. Parametrised over the registry, so a method registered later is checked automatically; what a
method promises comes from its class attributes (``conflict_free``, ``permutation_equivariant``,
``weighted``) and from the two tables below, decided from each method's definition:

- expected structure: the update has ``J``'s trailing shape, dtype and device, and is finite (every method);
- non-differentiable: the update and weights carry no graph to ``J`` (every method; our documented
  contract, ``Aggregator.__call__``: ``requires_grad`` is False, where TorchJD raises on backward);
- no conflict: ``Jd >= -tol`` (``conflict_free`` methods), ``tol`` as in ``test_aggregator_optimality``;
- permutation invariance: permuting the rows leaves the update unchanged and permutes the weights
  (``permutation_equivariant`` methods; the others draw a random order or mask per call);
- linear under scaling: ``A(diag(a·c₁ + b·c₂)J) = a·A(diag(c₁)J) + b·A(diag(c₂)J)`` for positive
  ``c₁, c₂, a, b`` (``LINEAR_UNDER_SCALING``);
- stationarity: on a strongly stationary ``J`` (``vᵀJ = 0`` for some ``v > 0``) a weighted conflict-free
  method returns 0 (``d = Jᵀw`` lies in the row space and ``Jd >= 0`` with ``vᵀJd = 0`` forces ``Jd = 0``,
  so ``‖d‖² = wᵀJd = 0``); and ``A(J) = 0`` only for a strongly stationary ``J`` (TorchJD's "strongly
  stationary" property, tested on non-strongly stationary ``J``: ``NONZERO_OFF_STATIONARY``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

import awloss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _matrices import SCALES, structured  # noqa: E402

AGGREGATORS = awloss.available("aggregator")
F64 = torch.float64
RHO = 1e-8  # the solvers' ridge relative to tr(G)

# Linear under row scaling, with the reason from the method's definition. Not linear (by definition): MGDA,
# DualProj, CAGrad, IMTL-G, Aligned-MTL, Nash-MTL, FairGrad (their weights depend non-linearly on the row
# norms); Krum and TrimmedMean (order statistics); GradDrop (a sign-dependent random mask); the stateful
# methods (their state depends on the gradients' scale; GradVac's and PCD's first call happens to be).
LINEAR_UNDER_SCALING = {
    "grad_mean": "d = Σ c_i g_i / T",
    "grad_sum": "d = Σ c_i g_i",
    "grad_constant": "fixed user weights: d = Σ w_i c_i g_i",
    "grad_random": "weights drawn independently of J (the same draws under the same seed)",
    "upgrad": "diag(c)J has J's dual cone (c > 0) and a cone projection is positively homogeneous: "
    "d = Σ c_i π(g_i) / T (up to the ridge, which is relative to tr(G))",
    "config": "the direction depends on the normalised rows only, its length Σ c_i g_iᵀu is linear in c",
    "pcgrad": "every projected row stays proportional to c_i and the conflict tests are scale free "
    "(the same random order under the same seed)",
}

# A(J) != 0 whenever J is not strongly stationary (TorchJD asserts it for Mean, Sum, UPGrad and DualProj).
NONZERO_OFF_STATIONARY = {
    "grad_mean": "Jᵀ1 = 0 would make J strongly stationary",
    "grad_sum": "same as grad_mean",
    "grad_constant": "its example's weights are positive: Jᵀw = 0 with w > 0 is strong stationarity",
    "upgrad": "Quinton & Rey 2024, Prop. (non-conflicting and strongly stationary)",
    "dualproj": "the projection of the mean is 0 only if the mean is in the polar cone: Jᵀ(1/T + λ) = 0",
}


def _make(name: str, T: int):
    return awloss.get_class(name)._make_example(T)


def _run(name: str, J: torch.Tensor, seed: int = 0):
    torch.manual_seed(seed)
    agg = _make(name, J.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # documented fallbacks warn once; they must not raise
        out = agg(J)
    return out, (agg._weights if agg.weighted else None)


def _tol(J: torch.Tensor, w: torch.Tensor | None) -> float:
    eps = torch.finfo(J.dtype).eps
    l1 = 1.0 if w is None else max(1.0, float(w.double().abs().sum()))
    return 10 * (J.shape[0] * eps + RHO) * float((J.double() ** 2).sum()) * l1


FAMILIES = structured()
SCALED = [(f"{key}*{s:g}", s * J) for key, J in FAMILIES if key.startswith("normal") for s in SCALES]
ZERO = [(f"zero-{T}x{n}", torch.zeros(T, n, dtype=F64)) for T, n in [(1, 1), (4, 3), (6, 9)]]
STRONG = [(k, J) for k, J in FAMILIES if k.startswith("strong")]
NON_STRONG = [(k, J) for k, J in FAMILIES if k.startswith(("strictly_weak", "non_weak"))]
ids = lambda cases: [c[0] for c in cases]  # noqa: E731


def test_the_tables_name_registered_methods():
    for table in (LINEAR_UNDER_SCALING, NONZERO_OFF_STATIONARY):
        assert set(table) <= set(AGGREGATORS), set(table) - set(AGGREGATORS)


def test_the_families_have_their_structure():
    """The samplers' promises, checked with MGDA's certified min-norm point (0 iff weakly stationary). A
    strictly weak J of rank 1 is weak through exact zero rows, which MGDA leaves out: checked directly."""
    for key, J in FAMILIES:
        zero_rows = bool((J == 0).all(dim=1).any())
        if key.startswith("strictly_weak") and zero_rows:
            continue
        if key.startswith(("strong", "strictly_weak")):
            d = awloss.get("mgda")(J)
            assert float(d.norm()) <= 1e-6 * float(J.norm()), key
        if key.startswith("non_weak"):
            assert float(awloss.get("mgda")(J).norm()) >= 1e-3 * float(J.norm()), key


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", AGGREGATORS)
def test_expected_structure(name, dtype):
    for key, J in ZERO + FAMILIES + SCALED:
        J = J.to(dtype)
        out, w = _run(name, J)
        assert out.shape == J.shape[1:] and out.dtype == dtype and out.device == J.device, (name, key)
        assert bool(torch.isfinite(out).all()), f"{name} on {key}: non-finite update"
        if w is not None:
            assert w.shape == J.shape[:1] and bool(torch.isfinite(w).all()), f"{name} on {key}: weights {w}"


@pytest.mark.parametrize("name", AGGREGATORS)
def test_non_differentiable(name):
    for key, J in FAMILIES[:4] + STRONG[:1]:
        J = J.clone().requires_grad_(True)
        out, w = _run(name, J)
        assert not out.requires_grad and out.grad_fn is None, f"{name} on {key}: the update carries a graph"
        assert w is None or not w.requires_grad


@pytest.mark.parametrize("name", [n for n in AGGREGATORS if awloss.get_class(n).conflict_free])
def test_no_conflict(name):
    for key, J in ZERO + FAMILIES + SCALED:
        d, w = _run(name, J)
        Jd = J @ d
        assert bool((Jd >= -_tol(J, w)).all()), f"{name} conflicts on {key}: Jd = {Jd.tolist()}"


@pytest.mark.parametrize("name", [n for n in AGGREGATORS if awloss.get_class(n).permutation_equivariant])
def test_permutation_invariant(name):
    g = torch.Generator().manual_seed(5)
    for key, J in FAMILIES:
        if J.shape[0] < 2:
            continue
        perm = torch.randperm(J.shape[0], generator=g)
        d, w = _run(name, J)
        dp, wp = _run(name, J[perm])
        scale = float(J.norm()) * (1.0 if w is None else max(1.0, float(w.abs().sum())))
        torch.testing.assert_close(dp, d, rtol=1e-6, atol=1e-7 * scale, msg=f"{name} on {key}")
        if w is not None:
            torch.testing.assert_close(wp, w[perm], rtol=1e-6, atol=1e-7 * max(1.0, float(w.abs().max())),
                                       msg=f"{name} on {key}: weights")


@pytest.mark.parametrize("name", sorted(LINEAR_UNDER_SCALING))
def test_linear_under_scaling(name):
    g = torch.Generator().manual_seed(6)
    for key, J in FAMILIES:
        T = J.shape[0]
        c1, c2 = torch.rand(T, generator=g, dtype=F64) + 0.1, torch.rand(T, generator=g, dtype=F64) + 0.1
        a, b = float(torch.rand((), generator=g)) + 0.1, float(torch.rand((), generator=g)) + 0.1
        x1, _ = _run(name, c1[:, None] * J)
        x2, _ = _run(name, c2[:, None] * J)
        Jc = (a * c1 + b * c2)[:, None] * J
        x, _ = _run(name, Jc)
        err = float((x - (a * x1 + b * x2)).norm())
        assert err <= 1e-5 * float(Jc.norm()), f"{name} on {key}: not linear ({err:.3g}): {LINEAR_UNDER_SCALING[name]}"


STATIONARY_TO_ZERO = [n for n in AGGREGATORS if awloss.get_class(n).conflict_free and awloss.get_class(n).weighted]


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", STATIONARY_TO_ZERO)
def test_strongly_stationary_gives_zero(name, dtype):
    for key, J in STRONG:
        J = J.to(dtype)
        d, w = _run(name, J)
        bound = 1e3 * (J.shape[0] * torch.finfo(dtype).eps + RHO) ** 0.5 * float(J.double().norm())
        assert float(d.double().norm()) <= bound * max(1.0, float(w.double().abs().sum())), (
            f"{name} on {key}: ‖d‖ = {float(d.norm()):.3g} at a strongly stationary J"
        )


@pytest.mark.parametrize("name", sorted(NONZERO_OFF_STATIONARY))
def test_zero_only_at_strong_stationarity(name):
    for key, J in NON_STRONG:
        d, _ = _run(name, J)
        assert float(d.norm()) >= 1e-3 * float(J.norm()) / J.shape[0], (
            f"{name} on {key}: 0 at a J that is not strongly stationary ({NONZERO_OFF_STATIONARY[name]})"
        )
