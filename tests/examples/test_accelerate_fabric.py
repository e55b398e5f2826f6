"""examples/accelerate_train.py and examples/fabric_train.py: each equals the same loop written in plain PyTorch."""

from __future__ import annotations

import pytest
import torch

import awloss

from ._load import load

pytest.importorskip("accelerate")
pytest.importorskip("lightning")

SCRIPTS = ["accelerate_train", "fabric_train"]


def _plain_loss_level(ex, steps: int = 5):
    torch.manual_seed(0)
    model = ex.TwoHeads()
    weighting = awloss.UncertaintyWeighting(2)
    opt = torch.optim.Adam([{"params": model.parameters()}, *weighting.param_groups(lr=0.025)], lr=1e-3)
    for batch in ex.batches(steps):
        opt.zero_grad()
        losses = ex.task_losses(model, batch)
        weighting(list(losses.values()) if isinstance(losses, dict) else losses).backward()
        opt.step()
    return weighting


def _plain_gradient_level(ex, aggregator: str, steps: int = 5):
    torch.manual_seed(0)
    model = ex.TwoHeads()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    agg = awloss.get(aggregator)
    for batch in ex.batches(steps):
        opt.zero_grad()
        losses = ex.task_losses(model, batch)
        awloss.backward(list(losses.values()) if isinstance(losses, dict) else losses, model.encoder.parameters(), agg)
        opt.step()
    return model


@pytest.mark.parametrize("script", SCRIPTS)
def test_loss_level_equals_the_plain_loop(script: str) -> None:
    ex = load(script)
    got, want = ex.loss_level(), _plain_loss_level(ex)
    assert not torch.equal(want.log_var, torch.zeros(2)), "the weighting never moved"
    assert torch.equal(got.log_var, want.log_var)
    assert torch.equal(got.weights, want.weights)


@pytest.mark.parametrize("script", SCRIPTS)
def test_gradient_level_equals_the_plain_loop(script: str) -> None:
    ex = load(script)
    model, weights = ex.gradient_level()
    want = _plain_gradient_level(ex, "upgrad")
    got = getattr(model, "module", model)
    for (name, a), b in zip(got.named_parameters(), want.parameters()):
        assert torch.equal(a, b), name
    assert weights.shape == (2,) and torch.isfinite(weights).all()


@pytest.mark.parametrize("script", SCRIPTS)
def test_grad_mean_through_the_framework_equals_a_plain_mean_backward(script: str) -> None:
    # An oracle that is not awloss.backward: grad_mean gives the shared encoder the gradient of the mean loss,
    # and each head (task-specific) the gradient of the summed loss, i.e. of its own loss.
    ex = load(script)
    model, _ = ex.gradient_level(steps=3, aggregator="grad_mean")
    torch.manual_seed(0)
    ref = ex.TwoHeads()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for batch in ex.batches(3):
        opt.zero_grad()
        losses = ex.task_losses(ref, batch)
        values = list(losses.values()) if isinstance(losses, dict) else losses
        (sum(values) / len(values)).backward()
        for head in (ref.head1, ref.head2):
            for p in head.parameters():
                p.grad.mul_(len(values))
        opt.step()
    for a, b in zip(getattr(model, "module", model).parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
