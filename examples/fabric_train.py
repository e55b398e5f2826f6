"""Multi-task training with Lightning Fabric: a loss-level weighting, then awloss.backward (CPU).

    python examples/fabric_train.py

Loss level: `fabric.setup(model, optimizer)` with the weighting's parameters in their own optimizer group,
then `fabric.backward(total)`. Keep the weighting out of `fabric.setup` (it syncs its losses across ranks
itself) and move it to `fabric.device`.

Gradient level: `awloss.backward` replaces `fabric.backward` (it runs one backward per task). With fp16
mixed precision pass Fabric's GradScaler as `scaler=`; on CPU and with bf16 there is none.
"""

from __future__ import annotations

import torch
from lightning.fabric import Fabric
from torch import nn

import awloss


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
        self.head1, self.head2 = nn.Linear(32, 1), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return self.head1(z).squeeze(-1), self.head2(z)


def batches(n: int = 5) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 8, generator=g), torch.randn(16, generator=g), torch.randint(0, 3, (16,), generator=g))
            for _ in range(n)]


def task_losses(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    x, y1, y2 = batch
    p1, p2 = model(x)
    return {"reg": nn.functional.mse_loss(p1, y1), "cls": nn.functional.cross_entropy(p2, y2)}


def loss_level(steps: int = 5) -> awloss.Weighting:
    torch.manual_seed(0)
    fabric = Fabric(accelerator="cpu", devices=1)
    model = TwoHeads()
    weighting = awloss.get("uw", num_tasks=2).to(fabric.device)
    optimizer = torch.optim.Adam([{"params": model.parameters()}, *weighting.param_groups(lr=0.025)], lr=1e-3)
    model, optimizer = fabric.setup(model, optimizer)
    for batch in batches(steps):
        optimizer.zero_grad()
        total = weighting(task_losses(model, batch))   # a dict: the keys become the task names
        fabric.backward(total)
        optimizer.step()
    print("loss level, weights:", weighting.weights_dict())
    return weighting


def gradient_level(steps: int = 5, aggregator: str = "upgrad") -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    fabric = Fabric(accelerator="cpu", devices=1)
    model = TwoHeads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    agg = awloss.get(aggregator)
    weights = torch.zeros(2)
    for batch in batches(steps):
        optimizer.zero_grad()
        losses = task_losses(model, batch)
        weights = awloss.backward(list(losses.values()), shared_params=model.module.encoder.parameters(),
                                  aggregator=agg)
        optimizer.step()
    print(f"gradient level ({aggregator}), last weights:", weights.tolist())
    return model, weights


if __name__ == "__main__":
    loss_level()
    gradient_level()
