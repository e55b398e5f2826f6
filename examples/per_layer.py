"""Per-layer aggregation: each layer of the shared trunk aggregates its own per-task gradients.

    python examples/per_layer.py

Conflicts between tasks often differ from layer to layer; aggregating each layer's Jacobian on its own (as in
TorchJD's per-layer examples) lets each layer take its own weights. One `awloss.backward` per layer, each with
its own aggregator (stateful ones keep per-layer state); the graph is kept until the last call, and only the
last call gives the task-specific heads their gradient (``task_params=[]`` before it).
"""

from __future__ import annotations

import torch
from torch import nn

import awloss


def main(steps: int = 10, aggregator: str = "upgrad") -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
    heads = nn.ModuleList([nn.Linear(16, 1) for _ in range(3)])
    layers = [trunk[0], trunk[2]]
    aggregators = [awloss.get(aggregator) for _ in layers]
    opt = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=0.05)
    g = torch.Generator().manual_seed(1)
    weights: list[torch.Tensor] = []
    for _ in range(steps):
        x = torch.randn(32, 6, generator=g)
        targets = [x[:, :2].sum(1), -x[:, :2].sum(1) + x[:, 2], x[:, 3] * x[:, 4]]  # the first two conflict
        feats = trunk(x)
        losses = [(h(feats).squeeze(-1) - t).pow(2).mean() for h, t in zip(heads, targets)]
        opt.zero_grad()
        weights = []
        for i, (layer, agg) in enumerate(zip(layers, aggregators)):
            last = i == len(layers) - 1
            weights.append(awloss.backward(losses, layer.parameters(), agg,
                                           task_params=heads.parameters() if last else [], retain_graph=not last))
        opt.step()
    for layer, w in zip(layers, weights):
        print(f"per-layer weights of {layer}: {[round(v, 3) for v in w.tolist()]}")
    return trunk, weights


if __name__ == "__main__":
    main()
