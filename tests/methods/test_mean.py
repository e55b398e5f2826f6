"""Mean: weights 1/T."""

import pytest
import torch

import awloss


@pytest.mark.parametrize("T", [1, 2, 7])
def test_mean_weights_are_one_over_T(T):
    losses = torch.rand(T, requires_grad=True)
    m = awloss.Mean()
    out = m(losses)
    (grad,) = torch.autograd.grad(out, losses)
    torch.testing.assert_close(out, losses.detach().mean())
    torch.testing.assert_close(grad, torch.full((T,), 1.0 / T))
    torch.testing.assert_close(m.weights, torch.full((T,), 1.0 / T))


def test_mean_is_sum_over_T():
    ls = [torch.tensor(v) for v in (1.0, 4.0, 10.0)]
    assert awloss.Mean()(ls).item() == pytest.approx(awloss.Sum()(ls).item() / 3)


def test_initial_weights_known_when_count_fixed():
    torch.testing.assert_close(awloss.Mean(4).weights, torch.full((4,), 0.25))
    with pytest.raises(RuntimeError, match="after the first call"):
        awloss.Mean().weights
