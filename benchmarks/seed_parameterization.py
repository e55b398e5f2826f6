"""How fast σ moves, and where weight decay pulls it, in AutomaticWeightedLoss's two parameterizations.

The seed learns σ itself; awloss learns s = log σ² by default (``parameterization="sigma"`` learns σ).
Same objective, different path. This script measures, for one task with a constant loss L, starting at
σ = 1 as the seed does:

1. the speed factor at the seed's learning rate (Adam's default 1e-3; SGD at 1e-3 and 1e-2): how many
   times further σ moves in sigma mode than in the default mode in the first step, and how many times
   more steps the default mode needs to cover half the way to the optimum σ*;
2. where coupled weight decay λ (``weight_decay=`` of the optimizer, e.g. the model's own through
   ``chain(model.parameters(), awl.parameters())``) puts the optimum: the weight 1/(2σ²) at the minimum
   of the objective plus λ/2·p² (p = σ in sigma mode, p = s by default), found by bisection and checked
   by running Adam on the module.

Deterministic (no timing). Run: ``python benchmarks/seed_parameterization.py`` (add ``--quick`` for
fewer cases).
"""

from __future__ import annotations

import argparse
import math

import torch

from awloss import AutomaticWeightedLoss


def _awl(mode: str) -> AutomaticWeightedLoss:
    return AutomaticWeightedLoss(1, parameterization=mode)


def sigma_star(loss: float) -> float:
    return math.sqrt((loss + math.sqrt(loss * loss + 8 * loss)) / 4)


def first_step(mode: str, opt: str, lr: float, loss: float) -> float:
    awl = _awl(mode)
    o = torch.optim.Adam(awl.parameters(), lr=lr) if opt == "adam" else torch.optim.SGD(awl.parameters(), lr=lr)
    o.zero_grad()
    awl(torch.tensor([loss])).backward()
    o.step()
    return abs(awl.sigma.item() - 1.0)


def steps_to_half(mode: str, opt: str, lr: float, loss: float, cap: int) -> int | None:
    """Steps until σ has covered half the distance from 1 to σ* (None if not within ``cap``)."""
    awl = _awl(mode)
    o = torch.optim.Adam(awl.parameters(), lr=lr) if opt == "adam" else torch.optim.SGD(awl.parameters(), lr=lr)
    target = 0.5 * (1.0 + sigma_star(loss))
    above = sigma_star(loss) > 1.0
    x = torch.tensor([loss])
    for step in range(1, cap + 1):
        o.zero_grad()
        awl(x).backward()
        o.step()
        s = awl.sigma.item()
        if (s >= target) if above else (s <= target):
            return step
    return None


def _bisect(f, lo: float, hi: float) -> float:
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (f(mid) > 0) == (f(hi) > 0):
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def decayed_weight(mode: str, loss: float, wd: float) -> float:
    """Weight 1/(2σ²) at the minimum of the seed's objective + wd/2·p² (p = σ or s = log σ²)."""
    if mode == "sigma":  # d/dσ: -L/σ³ + 2σ/(1+σ²) + wd·σ
        if loss == 0:
            return math.inf  # every term pulls σ to 0
        sig = _bisect(lambda p: -loss / p**3 + 2 * p / (1 + p * p) + wd * p, 1e-8, 1e4)
        return 0.5 / sig**2
    # d/ds: -L/2·e^{-s} + sigmoid(s) + wd·s  (a task whose loss is exactly 0 is masked: only wd·s acts)
    if loss == 0:
        return 0.5 if wd > 0 else math.nan  # s → 0 under decay; stays where it was without
    s = _bisect(lambda s: -0.5 * loss * math.exp(-s) + 1 / (1 + math.exp(-s)) + wd * s, -40.0, 40.0)
    return 0.5 * math.exp(-s)


def simulate_weight(mode: str, loss: float, wd: float, steps: int = 6000) -> float:
    awl = _awl(mode)
    o = torch.optim.Adam(awl.parameters(), lr=0.02, weight_decay=wd)
    sched = torch.optim.lr_scheduler.StepLR(o, step_size=steps // 3, gamma=0.1)
    x = torch.tensor([loss])
    for _ in range(steps):
        o.zero_grad()
        awl(x).backward()
        o.step()
        sched.step()
    return awl.weights.item()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases, shorter runs (a smoke test)")
    args = ap.parse_args(argv)
    losses = [0.1, 10.0] if args.quick else [0.01, 0.1, 10.0, 100.0]
    settings = [("adam", 1e-3)] if args.quick else [("adam", 1e-3), ("sgd", 1e-3), ("sgd", 1e-2)]
    cap = 3000 if args.quick else 200_000
    results: dict = {"speed": [], "decay": []}
    print("1. Speed at the seed's learning rate, one task, constant loss L, from σ = 1")
    print(f"{'optimizer':>10} {'lr':>6} {'L':>6} {'σ*':>6} {'1st step ×':>11} {'steps to ½ (σ / default)':>26} {'×':>6}")
    for opt, lr in settings:
        for loss in losses:
            fs = first_step("sigma", opt, lr, loss) / first_step("log_variance", opt, lr, loss)
            a = steps_to_half("sigma", opt, lr, loss, cap)
            b = steps_to_half("log_variance", opt, lr, loss, cap)
            ratio = b / a if a and b else math.nan
            results["speed"].append((opt, lr, loss, fs, a, b, ratio))
            print(f"{opt:>10} {lr:>6g} {loss:>6g} {sigma_star(loss):>6.3f} {fs:>11.2f} {str(a):>12} / {str(b):<11} {ratio:>6.2f}")
    print("\n2. Weight 1/(2σ²) at the optimum with coupled weight decay (L = 0: task absent or loss exactly 0)")
    print(f"{'L':>6} {'wd':>7} {'no decay':>9} {'sigma mode':>11} {'default':>9} {'Adam check (sigma / default)':>30}")
    for loss in [0.0, 0.01, 1.0, 10.0]:
        for wd in [1e-4, 1e-2] if args.quick else [1e-4, 5e-4, 1e-2, 0.1]:
            free = decayed_weight("log_variance", loss, 0.0) if loss else math.nan
            ws, wl = decayed_weight("sigma", loss, wd), decayed_weight("log_variance", loss, wd)
            check = ""
            if loss and wd == 1e-2:
                check = f"{simulate_weight('sigma', loss, wd):.4f} / {simulate_weight('log_variance', loss, wd):.4f}"
            results["decay"].append((loss, wd, free, ws, wl))
            print(f"{loss:>6g} {wd:>7g} {free:>9.4f} {ws:>11.4f} {wl:>9.4f} {check:>30}")
    return results


if __name__ == "__main__":
    main()
