"""GeometricMean (GLS, Chennupati et al. 2019): (Π L_i)^(1/T)."""

import math

import pytest
import torch

import awloss


@pytest.fixture(autouse=True)
def _immediate_checks(monkeypatch):
    """The messages here are checked within the call; the deferred mode (the default, the same message one
    call late) is checked for every method in tests/contract/test_deferred_checks.py."""
    monkeypatch.setattr(awloss.Weighting, "check", "immediate")


def test_value_and_weights_match_the_product_formula():
    losses = torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64, requires_grad=True)
    gls = awloss.GeometricMean()
    out = gls(losses)
    ref = losses.prod() ** (1 / 3)  # the paper's formula, differentiated by autograd
    (g_ref,) = torch.autograd.grad(ref, losses)
    assert out.item() == pytest.approx(4 ** (1 / 3))
    torch.testing.assert_close(gls.weights, g_ref)


def test_many_tasks_do_not_overflow():
    losses = torch.full((60,), 1e3)  # the product is 1e180: inf in float32
    assert torch.isinf(losses.prod())
    out = awloss.GeometricMean()(losses)
    assert out.item() == pytest.approx(1e3, rel=1e-4)


def test_direction_invariant_to_the_scale_of_a_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x = torch.randn(16, 4)

    def grad(scale):
        out = model(x)
        l1, l2 = out[:, 0].pow(2).mean(), scale * out[:, 1].pow(2).mean()
        return torch.autograd.grad(awloss.GeometricMean()(l1, l2), model.weight)[0].flatten()

    a, b = grad(1.0), grad(100.0)
    torch.testing.assert_close(b, 10.0 * a, rtol=1e-4, atol=1e-6)  # same direction, sqrt(100) larger


def test_zero_loss_raises_unless_shifted():
    with pytest.raises(ValueError, match=r"`losses\[0\]` must be > 0 for GeometricMean"):
        awloss.GeometricMean()(torch.tensor(0.0), torch.tensor(1.0))
    out = awloss.GeometricMean(eps=1.0)(torch.tensor(0.0), torch.tensor(3.0))
    assert out.item() == pytest.approx(math.sqrt(1.0 * 4.0))
