"""The methods added for parity with TorchJD 0.18 / LibMTL (issue 15), against their anchors.

Each comparison feeds the same inputs to our method and to the anchor: float64 Jacobians (T = 3, 5, 10;
well conditioned, ill conditioned, rank deficient, from ``make_jacobian``) for the tolerance stated per
method, plus a float32 run that must agree to float32 round-off. Anchors: TorchJD 0.18 classes; for MoCo
(LibMTL only) the paper's update written out as an oracle.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import awloss

from .test_aggregator_anchors import make_jacobian

tja = pytest.importorskip("torchjd.aggregation", reason="anchor `torchjd` not installed: pip install 'awloss[test]'")

CASES = [(T, kind) for T in (3, 5, 10) for kind in ("well", "ill", "rank")]


def _close(ours, ref, rtol, dtype=torch.float64):
    scale = float(ref.abs().max()) if ref.numel() else 1.0
    atol = rtol * max(scale, 1e-300)
    torch.testing.assert_close(ours.to(dtype), ref.to(dtype), rtol=0, atol=atol)
    return float((ours.to(dtype) - ref.to(dtype)).abs().max())


def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


# ------------------------------------------------------------------ grad_constant, grad_random
@pytest.mark.parametrize("T, kind", CASES)
def test_grad_constant_matches_torchjd_constant(T, kind):
    J = make_jacobian(T, kind)
    c = torch.linspace(2.0, -0.5, T, dtype=torch.float64)
    _close(awloss.get("grad_constant", weights=c)(J), tja.Constant(c)(J), 1e-14)
    J32, c32 = J.float(), c.float()
    _close(awloss.get("grad_constant", weights=c32)(J32), tja.Constant(c32)(J32), 1e-6, torch.float32)


def test_grad_constant_refuses_a_wrong_row_count():
    with pytest.raises(ValueError, match="`weights` has 2 entries but the Jacobian has 3 rows"):
        awloss.get("grad_constant", weights=[1.0, 2.0])(torch.randn(3, 4))
    with pytest.raises(ValueError, match="`weights` must be finite"):
        awloss.get("grad_constant", weights=[1.0, float("nan")])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T, kind", CASES)
def test_grad_random_matches_torchjd_random_under_the_same_seed(T, kind, dtype):
    J = make_jacobian(T, kind).to(dtype)
    torch.manual_seed(7)
    ref = tja.Random()(J)
    torch.manual_seed(7)
    ours = awloss.get("grad_random")(J)
    _close(ours, ref, 1e-14 if dtype == torch.float64 else 1e-6, dtype)
    seeded = awloss.get("grad_random", seed=7)  # a private generator seeded alike draws the same numbers
    _close(seeded(J), ref, 1e-14 if dtype == torch.float64 else 1e-6, dtype)


def test_grad_random_seeded_stream_resumes_and_absent_tasks_get_zero():
    a = awloss.get("grad_random", seed=3)
    J = torch.randn(4, 6)
    a(J)
    b = awloss.get("grad_random", seed=3)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(J), b(J), rtol=0, atol=0)
    J[2] = 0
    a(J)
    assert a.weights[2] == 0 and torch.isclose(a.weights.sum(), torch.tensor(1.0))
    a.reset()
    c = awloss.get("grad_random", seed=3)
    torch.testing.assert_close(a(J), c(J), rtol=0, atol=0)


# ------------------------------------------------------------------ trimmed_mean, krum
@pytest.mark.parametrize("T, kind, trim", [(T, k, b) for T, k in CASES for b in (0, 1, 2) if T >= 2 * b + 1])
def test_trimmed_mean_matches_torchjd(T, kind, trim):
    J = make_jacobian(T, kind)
    _close(awloss.get("trimmed_mean", trim_number=trim)(J), tja.TrimmedMean(trim)(J), 1e-14)
    _close(awloss.get("trimmed_mean", trim_number=trim)(J.float()), tja.TrimmedMean(trim)(J.float()), 1e-6,
           torch.float32)


def test_trimmed_mean_refuses_too_few_rows():
    with pytest.raises(ValueError, match="`trim_number` = 2 needs at least 5 rows"):
        awloss.get("trimmed_mean", trim_number=2)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="`trim_number` must be >= 0"):
        awloss.get("trimmed_mean", trim_number=-1)


@pytest.mark.parametrize("f, m", [(0, 1), (1, 1), (1, 2), (2, 3)])
@pytest.mark.parametrize("T, kind", [c for c in CASES if c[0] >= 5])
def test_krum_matches_torchjd(T, kind, f, m):
    J = make_jacobian(T, kind)
    J = torch.cat([J, 30 * torch.randn(1, J.shape[1], dtype=J.dtype)])  # one outlier row
    ours = awloss.get("krum", n_byzantine=f, n_selected=m)
    _close(ours(J), tja.Krum(f, m)(J), 1e-12)
    assert ours.weights[-1] == 0  # the outlier is never selected
    _close(awloss.get("krum", n_byzantine=f, n_selected=m)(J.float()), tja.Krum(f, m)(J.float()), 1e-6,
           torch.float32)


def test_krum_ties_are_shared_and_absent_rows_skipped():
    agg = awloss.get("krum")
    agg(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # T = 2: both rows tie
    torch.testing.assert_close(agg.weights, torch.tensor([0.5, 0.5]))
    J = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.2, 0.0], [0.0, 0.0]])
    agg(J)  # the three zero rows are closest to each other but absent: never selected
    assert agg.weights[[0, 1, 4]].abs().sum() == 0
    with pytest.raises(ValueError, match="`n_byzantine` = 2 needs at least 5 tasks"):
        awloss.get("krum", n_byzantine=2)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="`n_selected` = 5 must be <="):
        awloss.get("krum", n_selected=5)(torch.randn(4, 3))
