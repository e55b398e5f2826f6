"""examples/per_layer.py: each layer's .grad is its own aggregation, checked against an oracle built here."""

from __future__ import annotations

import torch

import awloss

from ._load import load

ex = load("per_layer")


def test_each_layer_aggregates_its_own_jacobian() -> None:
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8))
    heads = torch.nn.ModuleList([torch.nn.Linear(8, 1) for _ in range(3)])
    x = torch.randn(16, 5)
    feats = trunk(x)
    losses = [(h(feats).squeeze(-1) - x[:, i] * (-1) ** i).pow(2).mean() for i, h in enumerate(heads)]
    layers = [trunk[0], trunk[2]]
    # oracle: per-task gradients by autograd, flattened per layer, aggregated per layer
    expected = []
    for layer in layers:
        params = list(layer.parameters())
        J = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(L, params, retain_graph=True)])
                         for L in losses])
        expected.append(awloss.get("upgrad")(J))
    head_grads = [torch.autograd.grad(sum(losses), list(heads.parameters()), retain_graph=True)]
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        awloss.backward(losses, layer.parameters(), awloss.get("upgrad"),
                        task_params=heads.parameters() if last else [], retain_graph=not last)
    for layer, want in zip(layers, expected):
        got = torch.cat([p.grad.reshape(-1) for p in layer.parameters()])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    for p, g in zip(heads.parameters(), head_grads[0]):
        torch.testing.assert_close(p.grad, g)  # once, not once per layer


def test_script_layers_learn_different_weights() -> None:
    trunk, weights = ex.main(steps=5)
    assert len(weights) == 2 and all(w.shape == (3,) and torch.isfinite(w).all() for w in weights)
    assert not torch.allclose(weights[0], weights[1]), "each layer should take its own weights"
