"""Property tests (hypothesis) over every registered loss-level method."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import awloss
from awloss import AutomaticWeightedLoss, UncertaintyWeighting

WEIGHTINGS = awloss.available("weighting")
loss_lists = st.lists(st.floats(min_value=1e-3, max_value=1e3, allow_nan=False), min_size=1, max_size=6)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", WEIGHTINGS)
@SETTINGS
@given(values=loss_lists, data=st.data())
def test_permutation_equivariance(name, values, data):
    cls = awloss.get_class(name)
    if not cls.permutation_equivariant:
        pytest.skip(f"{name} declares permutation_equivariant=False (random or position-bound weights)")
    perm = data.draw(st.permutations(range(len(values))))
    losses = torch.tensor(values, dtype=torch.float64)
    a, b = cls._make_example(len(values)).double(), cls._make_example(len(values)).double()
    out_a, out_b = a(losses), b(losses[list(perm)])
    torch.testing.assert_close(out_a, out_b, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(a.weights[list(perm)], b.weights, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", WEIGHTINGS)
@SETTINGS
@given(values=loss_lists)
def test_weights_finite_and_nonnegative(name, values):
    w = awloss.get_class(name)._make_example(len(values))
    out = w(torch.tensor(values))
    assert torch.isfinite(out)
    assert torch.isfinite(w.weights).all()
    if not getattr(w, "signed_weights", False):  # PBI, COSMOS: a loss past its preferred share is pushed back up
        assert (w.weights >= 0).all()


@SETTINGS
@given(values=loss_lists, shift=st.floats(min_value=-3, max_value=3))
def test_uw_objective_is_separable_and_matches_closed_form(values, shift):
    """For any state, out = Σ c e^{-s} L + r(s) with r = s/2 (log) or softplus(s) (log1p)."""
    L = torch.tensor(values, dtype=torch.float64)
    for w in (UncertaintyWeighting(len(values), init=shift), AutomaticWeightedLoss(len(values), init=shift)):
        w = w.double()
        s = w.log_var.detach()  # the float32 init, widened
        reg = s / 2 if w.regularizer == "log" else torch.nn.functional.softplus(s)
        torch.testing.assert_close(w(L), (0.5 * torch.exp(-s) * L + reg).sum())


@SETTINGS
@given(loss=st.floats(min_value=1e-4, max_value=1e4), task_type=st.sampled_from(["regression", "classification"]))
def test_kendall_equilibrium_is_independent_of_task_type(loss, task_type):
    """At the optimum over s (closed form e^s = 2cL) the Kendall weight is 1/(2L) for both factors c."""
    c = 0.5 if task_type == "regression" else 1.0
    s = torch.tensor([torch.log(torch.tensor(2 * c * loss, dtype=torch.float64)).item()], dtype=torch.float64)
    uw = UncertaintyWeighting(1, task_types=task_type).double()
    with torch.no_grad():
        uw.log_var.copy_(s)
    L = torch.tensor([loss], dtype=torch.float64)
    uw(L).backward()
    assert abs(uw.log_var.grad.item()) < 1e-9  # stationary
    assert uw.weights.item() == pytest.approx(1 / (2 * loss), rel=1e-9)
