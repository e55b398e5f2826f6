"""ScaleInvariant (SI): Σ log L, weights 1/L, invariant to the scale of any loss."""

import math

import pytest
import torch

import awloss


@pytest.fixture(autouse=True)
def _immediate_checks(monkeypatch):
    """The messages here are checked within the call; the deferred mode (the default, the same message one
    call late) is checked for every method in tests/contract/test_deferred_checks.py."""
    monkeypatch.setattr(awloss.Weighting, "check", "immediate")


def test_value_and_weights():
    si = awloss.ScaleInvariant()
    losses = torch.tensor([0.5, 2.0, 8.0], requires_grad=True)
    out = si(losses)
    (grad,) = torch.autograd.grad(out, losses)
    assert out.item() == pytest.approx(math.log(0.5 * 2 * 8))
    torch.testing.assert_close(grad, torch.tensor([2.0, 0.5, 0.125]))
    torch.testing.assert_close(si.weights, grad)


def test_model_gradient_unchanged_when_a_loss_is_rescaled():
    # The defining property (Navon et al. 2022, "SI"): L_i -> k L_i leaves the update unchanged.
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x = torch.randn(16, 4)

    def grad(scale):
        out = model(x)
        l1, l2 = out[:, 0].pow(2).mean(), scale * out[:, 1].pow(2).mean()
        return torch.autograd.grad(awloss.ScaleInvariant()(l1, l2), model.weight)[0]

    torch.testing.assert_close(grad(1.0), grad(1000.0), rtol=1e-5, atol=1e-7)


def test_zero_and_negative_losses_raise_unless_shifted():
    si = awloss.ScaleInvariant()
    with pytest.raises(ValueError, match=r"`losses\[1\]` must be > 0 for ScaleInvariant .* got 0.0"):
        si(torch.tensor(1.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"must be >= 0 for ScaleInvariant, got -1.0"):
        si(torch.tensor(1.0), torch.tensor(-1.0))
    shifted = awloss.ScaleInvariant(eps=1e-3)
    out = shifted(torch.tensor(1.0), torch.tensor(0.0))
    assert out.item() == pytest.approx(math.log(1.001) + math.log(1e-3), rel=1e-6)
    torch.testing.assert_close(shifted.weights, torch.tensor([1 / 1.001, 1000.0]))


def test_bad_eps():
    with pytest.raises(ValueError, match="`eps` must be >= 0"):
        awloss.ScaleInvariant(eps=-1.0)


@pytest.mark.parametrize("cls", [awloss.ScaleInvariant, awloss.GeometricMean])
def test_float16_losses_are_weighed_in_float32(cls):
    """Issue 11 §6: 1/L in float16 overflowed (old main: SI weights [inf, 1] for losses [1e-6, 1])."""
    m = cls()
    losses = torch.tensor([1e-6, 1.0], dtype=torch.float16)
    out = m(losses)
    assert out.dtype == torch.float32 and m.weights.dtype == torch.float32
    assert bool(torch.isfinite(m.weights).all()) and torch.isfinite(out)
    ref = cls()
    ref(losses.float())
    torch.testing.assert_close(m.weights, ref.weights)
