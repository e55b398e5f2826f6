"""UW-SO (Kirchdorfer et al. 2024): softmax((1/sg[L])/T), analytic, no learnable parameters."""

import math

import pytest
import torch

import awloss


@pytest.fixture(autouse=True)
def _immediate_checks(monkeypatch):
    """The messages here are checked within the call; the deferred mode (the default, the same message one
    call late) is checked for every method in tests/contract/test_deferred_checks.py."""
    monkeypatch.setattr(awloss.Weighting, "check", "immediate")


def test_weights_are_the_tempered_softmax_of_inverse_losses():
    uwso = awloss.UWSO(temperature=2.0)
    losses = torch.tensor([0.25, 1.0, 4.0], requires_grad=True)
    out = uwso(losses)
    logits = [4.0 / 2, 1.0 / 2, 0.25 / 2]
    z = sum(math.exp(v) for v in logits)
    expected = torch.tensor([math.exp(v) / z for v in logits])
    torch.testing.assert_close(uwso.weights, expected)
    (grad,) = torch.autograd.grad(out, losses)
    torch.testing.assert_close(grad, expected)  # stop-gradient: the weights are constants
    assert out.item() == pytest.approx(float((expected * losses.detach()).sum()))


def test_temperature_limits():
    losses = torch.tensor([0.5, 1.0, 2.0])
    hot, cold = awloss.UWSO(temperature=1e4), awloss.UWSO(temperature=1e-2)
    hot(losses), cold(losses)
    torch.testing.assert_close(hot.weights, torch.full((3,), 1 / 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(cold.weights, torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_rescaling_all_losses_is_absorbed_by_the_temperature():
    losses = torch.tensor([0.3, 0.7, 2.0])
    a, b = awloss.UWSO(temperature=0.5), awloss.UWSO(temperature=0.5 / 10)
    a(losses), b(10 * losses)
    torch.testing.assert_close(a.weights, b.weights)


def test_no_parameters_no_state():
    uwso = awloss.UWSO(3)
    assert list(uwso.parameters()) == [] and not uwso.learnable and not uwso.stateful


def test_zero_and_negative_losses_and_bad_temperature():
    with pytest.raises(ValueError, match=r"`losses\[0\]` must be > 0 for UWSO"):
        awloss.UWSO()(torch.tensor(0.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"must be >= 0 for UWSO, got -0.5"):
        awloss.UWSO()(torch.tensor(-0.5), torch.tensor(1.0))
    shifted = awloss.UWSO(eps=1.0)
    shifted(torch.tensor(0.0), torch.tensor(1.0))
    torch.testing.assert_close(shifted.weights, torch.softmax(torch.tensor([1.0, 0.5]), 0))
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        awloss.UWSO(temperature=0.0)


def test_float16_losses_below_1_5e_5_give_finite_float32_weights():
    """Issue 11 §6: 1/L in float16 overflowed (old main: weights [nan, nan] for losses [1e-6, 1])."""
    uwso = awloss.UWSO(temperature=1e6)
    losses = torch.tensor([1e-6, 1.0], dtype=torch.float16, requires_grad=True)
    out = uwso(losses)
    assert uwso.weights.dtype == torch.float32 and bool(torch.isfinite(uwso.weights).all())
    torch.testing.assert_close(uwso.weights, torch.softmax(1e-6 / losses.detach().float(), 0))
    (grad,) = torch.autograd.grad(out, losses)
    assert bool(torch.isfinite(grad).all())


def test_default_temperature_warns_when_the_weights_are_one_hot():
    """Issue 11 §6: losses 10x apart around 0.1 gave weights [0.99988, 1.2e-4] without a word."""
    with pytest.warns(UserWarning, match=r"puts 0.9999 of the weight on one task.*temperature=10"):
        awloss.UWSO()(torch.tensor([0.1, 1.0]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        awloss.UWSO()(torch.tensor([1.0, 10.0]))  # [0.71, 0.29]: no warning
        awloss.UWSO(temperature=10.0)(torch.tensor([0.1, 1.0]))
