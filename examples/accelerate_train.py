"""Multi-task training with Hugging Face accelerate: a loss-level weighting, then awloss.backward (CPU).

    python examples/accelerate_train.py

Loss level: the weighting returns one scalar and `accelerator.backward(total)` does the rest (loss scaling
for fp16, gradient accumulation, DDP/FSDP through accelerate). Keep the weighting out of
`accelerator.prepare` (it is not a model to wrap in DDP: it syncs its losses across ranks itself) and move it to
`accelerator.device`; its parameters go into the prepared optimizer in their own group.

Gradient level: `awloss.backward` runs its own per-task backward passes, so it replaces
`accelerator.backward`. What accelerator.backward would do, and how to get it back:
  * loss scaling with fp16 mixed precision: pass `scaler=accelerator.scaler` (None on CPU and for bf16);
  * gradient accumulation: divide the losses by `accelerator.gradient_accumulation_steps` yourself;
  * DeepSpeed / Megatron engines: not supported by awloss.backward (use a loss-level weighting there).
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
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


def task_losses(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    x, y1, y2 = batch
    p1, p2 = model(x)
    return [nn.functional.mse_loss(p1, y1), nn.functional.cross_entropy(p2, y2)]


def loss_level(steps: int = 5) -> awloss.Weighting:
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = TwoHeads()
    weighting = awloss.UncertaintyWeighting(2, task_names=["reg", "cls"]).to(accelerator.device)
    optimizer = torch.optim.Adam([{"params": model.parameters()}, *weighting.param_groups(lr=0.025)], lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    for batch in batches(steps):
        optimizer.zero_grad()
        total = weighting(task_losses(model, batch))
        accelerator.backward(total)
        optimizer.step()
    print("loss level, weights:", weighting.weights_dict())
    return weighting


def gradient_level(steps: int = 5, aggregator: str = "upgrad") -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = TwoHeads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    agg = awloss.get(aggregator)
    encoder = accelerator.unwrap_model(model).encoder
    weights = torch.zeros(2)
    for batch in batches(steps):
        optimizer.zero_grad()
        losses = [loss / accelerator.gradient_accumulation_steps for loss in task_losses(model, batch)]
        weights = awloss.backward(losses, shared_params=encoder.parameters(), aggregator=agg, scaler=accelerator.scaler)
        optimizer.step()
    print(f"gradient level ({aggregator}), last weights:", weights.tolist())
    return model, weights


if __name__ == "__main__":
    loss_level()
    gradient_level()
