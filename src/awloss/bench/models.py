"""Small multi-task networks for the bench: a shared trunk ``.shared`` plus one head per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MTLModel", "mlp", "multi_lenet", "mlp_model", "TinySegNet", "seg_model"]


class MTLModel(nn.Module):
    """``shared`` maps the input to a representation; ``heads[i]`` maps it to task ``i``'s output."""

    def __init__(self, shared: nn.Module, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        self.shared = shared
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Tensor) -> list[Tensor]:
        z = self.shared(x)
        return [head(z) for head in self.heads]

    def last_shared_layer(self) -> nn.Module:
        """The last module of the trunk that owns parameters (GradNorm takes its gradient norms there)."""
        last = None
        for m in self.shared.modules():
            if any(True for _ in m.parameters(recurse=False)):
                last = m
        if last is None:  # pragma: no cover - every bench trunk has parameters
            raise ValueError("The shared trunk has no parameters.")
        return last


def mlp(sizes: Sequence[int], *, last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mlp_model(in_dim: int, trunk: Sequence[int], head: Sequence[int], out_dims: Sequence[int]) -> MTLModel:
    """MLP trunk ``in_dim → trunk…`` and per-task MLP heads ``trunk[-1] → head… → out``."""
    shared = mlp([in_dim, *trunk])
    heads = [mlp([trunk[-1], *head, d], last_activation=False) for d in out_dims]
    return MTLModel(shared, heads)


def multi_lenet(num_tasks: int = 2, classes: int = 10) -> MTLModel:
    """MultiLeNet of Sener & Koltun (2018): conv-pool-conv-pool-fc(50) trunk, fc(50)-fc(classes) heads."""
    shared = nn.Sequential(
        nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(320, 50), nn.ReLU(),
    )  # fmt: skip
    heads = [nn.Sequential(nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, classes)) for _ in range(num_tasks)]
    return MTLModel(shared, heads)


def _block(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(),
        nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(),
    )  # fmt: skip


class TinySegNet(nn.Module):
    """A small U-Net-like encoder-decoder: image ``[N,3,H,W]`` → features ``[N,C,H,W]`` (H, W ÷ 4)."""

    def __init__(self, channels: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.enc1, self.enc2, self.enc3 = _block(3, c1), _block(c1, c2), _block(c2, c3)
        self.dec2, self.dec1 = _block(c3 + c2, c2), _block(c2 + c1, c1)
        self.out_channels = c1

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        e3 = self.enc3(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([nn.functional.interpolate(e3, scale_factor=2.0), e2], 1))
        out: Tensor = self.dec1(torch.cat([nn.functional.interpolate(d2, scale_factor=2.0), e1], 1))
        return out


def seg_model(out_channels: Sequence[int], channels: Sequence[int] = (16, 32, 64)) -> MTLModel:
    """TinySegNet trunk with a 3×3-conv + 1×1-conv head per dense task."""
    trunk = TinySegNet(channels)
    c = trunk.out_channels
    heads = [nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, k, 1)) for k in out_channels]
    return MTLModel(trunk, heads)
