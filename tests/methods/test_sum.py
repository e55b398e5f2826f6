"""Sum (EW / LS): unit weights, any task count, aliases."""

import pytest
import torch

import awloss


def test_sum_is_the_plain_sum_and_weights_are_one():
    losses = torch.tensor([0.3, 2.0, 7.5], requires_grad=True)
    ew = awloss.Sum()
    out = ew(losses)
    (grad,) = torch.autograd.grad(out, losses)
    assert out.item() == pytest.approx(9.8)
    assert torch.equal(grad, torch.ones(3)) and torch.equal(ew.weights, torch.ones(3))


@pytest.mark.parametrize("alias", ["sum", "ew", "LS", "equal"])
def test_aliases_resolve_to_sum(alias):
    assert awloss.get_class(alias) is awloss.Sum


def test_any_count_unless_fixed():
    ew = awloss.Sum()
    assert ew(1.0, 2.0).item() == 3.0
    assert ew(1.0, 2.0, 3.0, 4.0).item() == 10.0
    with pytest.raises(ValueError, match="Expected 2 losses"):
        awloss.Sum(2)(1.0, 2.0, 3.0)


def test_same_model_gradient_as_hand_written_sum():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x = torch.randn(8, 3)
    out = model(x)
    l1, l2 = out[:, 0].pow(2).mean(), out[:, 1].abs().mean()
    g_ref = torch.autograd.grad(l1 + l2, model.weight, retain_graph=True)[0]
    g = torch.autograd.grad(awloss.Sum()(l1, l2), model.weight)[0]
    torch.testing.assert_close(g, g_ref)
