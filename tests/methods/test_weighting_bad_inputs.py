"""Zero, negative and NaN losses for every loss-level method: a clear error or a documented, finite result."""

import pytest
import torch

import awloss

ERR_ZERO = r"must be > 0 for {cls} \(.*\), got 0.0; pass `eps > 0`"
ERR_NEG = r"must be >= 0 for {cls}, got -0.5"
# name -> (zero loss: None = finite result or an error pattern, negative loss: same)
EXPECTED = {
    "sum": (None, None),
    "mean": (None, None),
    "constant": (None, None),
    "si": (ERR_ZERO, ERR_NEG),
    "gls": (ERR_ZERO, ERR_NEG),
    "uwso": (ERR_ZERO, ERR_NEG),
    "dwa": (None, None),
    "rlw": (None, None),
    "imtl_l": (None, ERR_NEG),  # zero: masked, its log-scale frozen
    "famo": (None, ERR_NEG),  # zero: log(0 + eps), documented; min_losses != 0: "below its lower bound"
    "gradnorm": (None, ERR_NEG),
    "stch": (None, None),  # paper form: max-type, any sign
    "uw": (None, ERR_NEG),
    "awl": (None, ERR_NEG),
    "cosmos": (None, None),  # a cosine of the loss vector: defined for any sign, finite at 0 (norm floor)
    "pbi": (None, None),  # a decomposition along the preference ray: any sign, d2 has its eps floor
}


def test_every_weighting_is_covered():
    assert set(EXPECTED) == set(awloss.available("weighting"))


def make(name):
    return awloss.get_class(name)._make_example(2)


@pytest.fixture(autouse=True, params=["deferred", "immediate"])
def mode(request, monkeypatch):
    monkeypatch.setattr(awloss.Weighting, "check", request.param)
    return request.param


def call(w, *losses):
    """A call and the read of its check: within the call ("immediate") or by ``verify()`` ("deferred")."""
    out = w(*losses)
    w.verify()
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_zero_loss(name):
    pattern = EXPECTED[name][0]
    w = make(name)
    losses = torch.tensor([0.0, 1.0], requires_grad=True)
    if pattern is None:
        out = w(losses)
        (grad,) = torch.autograd.grad(out, losses)
        assert torch.isfinite(out) and torch.isfinite(grad).all() and torch.isfinite(w.weights).all()
    else:
        with pytest.raises(ValueError, match=pattern.format(cls=type(w).__name__)):
            call(w, losses)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_negative_loss(name):
    pattern = EXPECTED[name][1]
    w = make(name)
    losses = torch.tensor([1.0, -0.5], requires_grad=True)
    if pattern is None:
        out = w(losses)
        assert torch.isfinite(out) and torch.isfinite(w.weights).all()
    else:
        with pytest.raises(ValueError, match=pattern.format(cls=type(w).__name__)):
            call(w, losses)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_nan_and_inf_raise_naming_the_task(name, bad):
    w = make(name)
    with pytest.raises(ValueError, match=rf"Loss `depth` must be finite, got {bad}"):
        call(w, {"seg": torch.tensor(1.0), "depth": torch.tensor(bad)})


@pytest.mark.parametrize("name", ["si", "gls", "uwso"])
def test_eps_gives_the_documented_shift(name):
    w = awloss.get_class(name)(eps=0.5)
    out = w(torch.tensor(0.0), torch.tensor(1.0))
    assert torch.isfinite(out) and torch.isfinite(w.weights).all()
