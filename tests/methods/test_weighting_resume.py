"""Checkpoint mid-training, resume: the next weights are identical, for every stateful method."""

from __future__ import annotations

import copy

import pytest
import torch

import awloss

T = 3
STATEFUL = [n for n in awloss.available("weighting") if awloss.get_class(n).stateful or awloss.get_class(n).learnable]
CASES = [(n, {}) for n in STATEFUL] + [("stch", {"warmup_epochs": 1}), ("dwa", {"temperature": 0.5})]


def build(name, kwargs):
    torch.manual_seed(0)
    trunk, head = torch.nn.Linear(4, 8), torch.nn.Linear(8, T)
    model = torch.nn.Sequential(trunk, torch.nn.Tanh(), head)
    cls = awloss.get_class(name)
    if name == "gradnorm":
        w = cls(T, shared=trunk, **kwargs)
    elif kwargs:
        w = cls(T, **kwargs)
    else:
        w = cls._make_example(T)
    opt = torch.optim.Adam([{"params": model.parameters()}, *w.param_groups(lr=0.05)], lr=0.01)
    return model, w, opt


def batch_losses(model, k):
    g = torch.Generator().manual_seed(1000 + k)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, T, generator=g) * torch.tensor([1.0, 10.0, 0.1])
    return ((model(x) - y) ** 2).mean(0) + 0.01


def train(model, w, opt, steps):
    used = []
    for k in steps:
        total = w(batch_losses(model, k))
        used.append((total.detach().clone(), w.weights.clone()))
        opt.zero_grad()
        total.backward()
        opt.step()
        with torch.no_grad():
            w.update(batch_losses(model, k))
        if k % 3 == 2:
            w.step()  # end of a 3-batch "epoch"
    return used


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}{'-' + '-'.join(kw) if kw else ''}" for n, kw in CASES])
def test_resume_gives_identical_next_weights(name, kwargs):
    model, w, opt = build(name, kwargs)
    train(model, w, opt, range(0, 7))  # mid-epoch checkpoint (7 = 2 epochs + 1 batch)
    ckpt = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "w": w.state_dict()})
    expected = train(model, w, opt, range(7, 13))

    model2, w2, opt2 = build(name, kwargs)
    train(model2, w2, opt2, range(0, 2))  # a different state, overwritten by the checkpoint
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    w2.load_state_dict(ckpt["w"])
    got = train(model2, w2, opt2, range(7, 13))
    changed = False
    for (out_a, w_a), (out_b, w_b) in zip(expected, got):
        assert torch.equal(w_a, w_b), f"{name}: weights after resume {w_b} != {w_a}"
        assert torch.equal(out_a, out_b)
        changed |= not torch.equal(w_a, expected[0][1])
    if name not in ("constant",):
        assert changed, f"{name}: weights never changed, the test would not see a lost state"
