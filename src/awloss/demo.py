"""The main demo: learn two regression tasks whose noise levels are known (σ = 1 and σ = 10).

Run it with ``python -m awloss.demo``. A small shared network with two heads is trained on synthetic data
``y_k = f_k(x) + σ_k ε``. With a good fit each task's mean-squared error approaches ``σ_k²``, so

* Kendall's uncertainty weighting (:class:`~awloss.UncertaintyWeighting`, ``"log"``) learns σ_k itself;
* the seed's :class:`~awloss.AutomaticWeightedLoss` (Liebel & Körner's ``ln(1+σ²)``) learns the σ that
  minimises its own objective, ``σ*² = (L + √(L² + 8L))/4`` with ``L = σ_k²``: 1 for σ = 1 but ≈ 7.1 for
  σ = 10. Its regulariser damps the weighting of large-loss tasks less than Kendall's.

The demo prints the learned σ of both next to their targets as training proceeds.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .weighting import AutomaticWeightedLoss, UncertaintyWeighting

__all__ = ["make_data", "run", "main"]

TRUE_SIGMA = (1.0, 10.0)


def make_data(n: int, generator: torch.Generator, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh batch: inputs ``x[n, dim]`` and targets ``y[n, 2]`` with noise σ = (1, 10) on the two tasks.

    The regression functions are fixed (seeded with 0); only the samples come from ``generator``, so each
    batch is new data and the model cannot overfit the noise.
    """
    w = torch.randn(dim, 2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(n, dim, generator=generator)
    clean = torch.stack([x @ w[:, 0], 3 * torch.sin(x @ w[:, 1])], dim=1)
    noise = torch.randn(n, 2, generator=generator) * torch.tensor(TRUE_SIGMA)
    return x, clean + noise


def target_sigma(true_sigma: float, regularizer: str) -> float:
    """The σ the weighting should learn when the task's loss equals ``true_sigma ** 2``."""
    loss = true_sigma**2
    if regularizer == "log":
        return true_sigma
    return math.sqrt((loss + math.sqrt(loss * loss + 8 * loss)) / 4)


def run(steps: int = 800, seed: int = 0, verbose: bool = False) -> dict[str, dict[str, list[float]]]:
    """Train one model per weighting; return learned and target σ per weighting."""
    results: dict[str, dict[str, list[float]]] = {}
    for label, weighting in (
        ("UncertaintyWeighting (Kendall, log)", UncertaintyWeighting(2)),
        ("AutomaticWeightedLoss (Liebel, log1p)", AutomaticWeightedLoss(2)),
    ):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
        optimizer = torch.optim.Adam([{"params": model.parameters()}, *weighting.param_groups(lr=0.05)], lr=1e-2)
        targets = [target_sigma(s, weighting.regularizer) for s in TRUE_SIGMA]
        if verbose:
            print(f"\n{label}: target σ = {', '.join(f'{t:.2f}' for t in targets)}")
        for step in range(1, steps + 1):
            x, y = make_data(1024, g)
            pred = model(x)
            losses = ((pred - y) ** 2).mean(dim=0)  # per-task MSE
            total = weighting(losses[0], losses[1])
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            if verbose and (step in (1, 10, 50) or step % 100 == 0):
                sig = ", ".join(f"{s:6.2f}" for s in weighting.sigma.tolist())
                mse = ", ".join(f"{v:7.2f}" for v in losses.tolist())
                print(f"  step {step:4d}  learned σ = {sig}   task MSE = {mse}")
        results[label] = {"learned": weighting.sigma.tolist(), "target": targets, "true": list(TRUE_SIGMA)}
    return results


def main() -> None:
    """Entry point of ``python -m awloss.demo``."""
    print("Two regression tasks with true noise σ = 1 and σ = 10 (Adam, fresh batches of 1024).")
    results = run(verbose=True)
    print("\nSummary (learned σ vs the σ each objective should converge to):")
    for label, r in results.items():
        pairs = "; ".join(
            f"task {i + 1}: {lv:.2f} vs {tv:.2f} ({100 * abs(lv - tv) / tv:.0f}% off)"
            for i, (lv, tv) in enumerate(zip(r["learned"], r["target"]))
        )
        print(f"  {label}: {pairs}")


if __name__ == "__main__":
    main()
