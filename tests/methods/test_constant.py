"""Constant: fixed user weights (main task + auxiliary tasks)."""

import pytest
import torch

import awloss


def test_main_plus_auxiliary_weights():
    w = awloss.Constant([1.0, 0.1, 0.01])
    losses = torch.tensor([2.0, 3.0, 50.0], requires_grad=True)
    out = w(losses)
    (grad,) = torch.autograd.grad(out, losses)
    assert out.item() == pytest.approx(2.0 + 0.3 + 0.5)
    torch.testing.assert_close(grad, torch.tensor([1.0, 0.1, 0.01]))


def test_mapping_sets_names_and_reads_by_name():
    w = awloss.Constant({"main": 1.0, "aux": 0.5})
    assert w.task_names == ("main", "aux")
    out = w({"aux": torch.tensor(4.0), "main": torch.tensor(1.0)})
    assert out.item() == pytest.approx(3.0)
    assert w.weights_dict() == {"main": 1.0, "aux": 0.5}


def test_weights_travel_in_state_dict():
    a, b = awloss.Constant([1.0, 0.2]), awloss.Constant([0.5, 0.5])
    b.load_state_dict(a.state_dict())
    b(torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(b.weights, torch.tensor([1.0, 0.2]))


@pytest.mark.parametrize(
    "weights, match",
    [
        ([1.0, -0.1], "must be >= 0"),
        ([0.0, 0.0], "at least one > 0"),
        ([1.0, float("nan")], "must be finite"),
        ([], "must be finite"),
        ("abc", "must be a float or a sequence"),
    ],
)
def test_bad_weights(weights, match):
    with pytest.raises((ValueError, TypeError), match=match):
        awloss.Constant(weights)


def test_wrong_count_and_double_names():
    with pytest.raises(ValueError, match="Expected 2 losses"):
        awloss.Constant([1.0, 2.0])(1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="either in `weights`"):
        awloss.Constant({"a": 1.0}, task_names=["a"])
