"""Shared helpers of the engine tests: a tiny multi-task problem and a generic training loop.

Loaded by path (``load_helpers()``) from the tests and from the DDP worker scripts, which run in fresh
processes; nothing here is collected by pytest.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import awloss
from awloss.weighting import Weighting

HERE = Path(__file__).resolve().parent
NUM_TASKS = 3
D_IN = 4
NOISE = (0.1, 1.0, 3.0)  # per-task noise: the learnable weightings have something to learn
# Methods whose default arguments keep no state: the engine tests use their stateful recipe instead.
ENGINE_KWARGS: dict[str, dict[str, Any]] = {"stch": {"warmup_epochs": 1}}  # epochs end every 3 steps


class TinyMTL(nn.Module):
    """A shared trunk and one linear head per task."""

    def __init__(self, num_tasks: int = NUM_TASKS, hidden: int = 8) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(D_IN, hidden), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(num_tasks))

    def forward(self, x: Tensor) -> Tensor:
        h = self.trunk(x)
        return torch.cat([head(h) for head in self.heads], dim=1)


def make_batch(step: int, size: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """A deterministic batch for ``step`` (the same on every process)."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(size, D_IN, generator=g, dtype=dtype)
    clean = torch.stack([x[:, 0] + x[:, 1], x[:, 2] * 2 - x[:, 3], x.sum(1)], dim=1)[:, :NUM_TASKS]
    noise = torch.randn(size, NUM_TASKS, generator=g, dtype=dtype) * torch.tensor(NOISE[:NUM_TASKS], dtype=dtype)
    return x, clean + noise


def task_losses(pred: Tensor, y: Tensor) -> list[Tensor]:
    return [torch.nn.functional.mse_loss(pred[:, i], y[:, i]) for i in range(pred.shape[1])]


def make_weighting(name: str, num_tasks: int = NUM_TASKS, model: nn.Module | None = None) -> Weighting:
    """The method with default arguments; one that needs the shared layer (GradNorm) gets ``model.trunk``."""
    cls = awloss.get_class(name)
    if name in ENGINE_KWARGS:
        return cls(num_tasks, **ENGINE_KWARGS[name])
    if model is not None and "shared" in inspect.signature(cls.__init__).parameters:
        return cls(num_tasks, shared=model.trunk)
    return cls._make_example(num_tasks)


def has_update(w: Weighting) -> bool:
    return type(w).update is not Weighting.update


def build(name: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, Weighting, Any]:
    """Model, weighting and optimizer (one Adam, the weighting in its own param group)."""
    torch.manual_seed(seed)
    model = TinyMTL().to(dtype)
    w = make_weighting(name, model=model).to(dtype)
    opt = torch.optim.Adam([{"params": model.parameters()}, *w.param_groups(lr=0.05)], lr=0.01)
    return model, w, opt


def train_step(step: int, forward: Any, model: nn.Module, w: Weighting, opt: Any, x: Tensor, y: Tensor) -> None:
    """One step of the generic loop: weigh, backward, step, then the method's lifecycle hooks."""
    total = forward(x, y)
    opt.zero_grad()
    total.backward()
    opt.step()
    if has_update(w):
        with torch.no_grad():
            w.update(task_losses(model(x), y))
    if step % 3 == 2:  # "end of epoch" every 3 steps
        w.step()


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_awloss_test_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
