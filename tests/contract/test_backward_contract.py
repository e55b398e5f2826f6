"""What ``awloss.backward`` guarantees for every registered aggregator (a new one joins automatically)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import awloss
from awloss.aggregation import Aggregator

AGGREGATORS = awloss.available("aggregator")
T = 3


def make(name: str) -> Aggregator:
    return awloss.get_class(name)._make_example(T)


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(4, 5), nn.Tanh()).to(dtype)
    heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(T)).to(dtype)
    xs = [torch.randn(8, 4, dtype=dtype) for _ in range(3)]
    return trunk, heads, xs


def _step(agg, trunk, heads, x, **kw):
    """One ``awloss.backward`` call from zero ``.grad``; returns the trunk's ``.grad`` and the weights."""
    trunk.zero_grad()
    heads.zero_grad()
    f = trunk(x)
    losses = [(h(f).squeeze(-1) - i).pow(2).mean() for i, h in enumerate(heads)]
    torch.manual_seed(7)  # the random methods draw the same numbers in both runs
    w = awloss.backward(losses, trunk.parameters(), agg, **kw)
    return torch.cat([p.grad.reshape(-1) for p in trunk.parameters()]).clone(), w


def _copy(agg, how):
    if how == "pickle":
        return pickle.loads(pickle.dumps(agg))
    if how == "deepcopy":
        return copy.deepcopy(agg)
    buf = io.BytesIO()
    torch.save(agg, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "torch.save"])
@pytest.mark.parametrize("calls_before", [0, 1])
@pytest.mark.parametrize("name", AGGREGATORS)
def test_a_copy_taken_before_or_after_a_call_continues_like_the_original(name, calls_before, how):
    """Issue 11 §3: the Jacobian buffers cached by ``backward`` once travelled with the aggregator; the copy's
    buffer lost its aliasing with the cached views and every later update of the copy was exactly 0."""
    trunk, heads, xs = _model()
    agg = make(name)
    for x in xs[:calls_before]:
        _step(agg, trunk, heads, x)
    twin = _copy(agg, how)
    for x in xs:
        g_ref, w_ref = _step(agg, trunk, heads, x)
        g, w = _step(twin, trunk, heads, x)
        assert g.abs().sum() > 0, f"{name}: the copy's update is 0"
        torch.testing.assert_close(g, g_ref, rtol=0, atol=0)
        if w_ref is not None:
            torch.testing.assert_close(w, w_ref, rtol=0, atol=0)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_pickled_state_holds_no_jacobian_buffer(name):
    trunk, heads, xs = _model()
    agg = make(name)
    _step(agg, trunk, heads, xs[0])
    assert not any(isinstance(v, dict) and any(isinstance(k, tuple) for k in v) for v in vars(agg).values())
    n_params = sum(p.numel() for p in trunk.parameters())
    big = [v for v in vars(pickle.loads(pickle.dumps(agg))).values() if isinstance(v, torch.Tensor)]
    assert all(v.numel() < T * n_params for v in big)
