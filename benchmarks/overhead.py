"""Overhead of each registered loss-level weighting over a plain summed-loss training step.

One training step = forward of a small MLP trunk with T linear heads, per-task MSE, the combination
(plain ``losses.sum()`` or the weighting), ``zero_grad``, ``backward`` and ``Adam.step`` (the weighting's own
parameters in their own group). Both paths are timed in the same run, interleaved in rounds so drift hits
both alike; the reported figure is the ratio of medians.

    python benchmarks/overhead.py [--tasks 2 10] [--rounds 7] [--steps 100] [--methods uw awl]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import awloss


def build(num_tasks: int, width: int, batch: int = 256, seed: int = 0):
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
    heads = nn.Linear(width, num_tasks)  # T scalar heads, batched
    model = nn.Sequential(trunk, heads)
    x = torch.randn(batch, 64)
    y = torch.randn(batch, num_tasks) * torch.logspace(0, 2, num_tasks)
    return model, x, y


def make_step(method_name: str | None, num_tasks: int, width: int, batch: int = 256):
    model, x, y = build(num_tasks, width, batch)
    weighting = None
    groups = [{"params": list(model.parameters())}]
    if method_name is not None:
        weighting = awloss.get_class(method_name)._make_example(num_tasks)
        if hasattr(weighting, "attach"):  # methods that need the model (e.g. GradNorm) hook in here
            weighting.attach(model)
        groups += weighting.param_groups(lr=0.025)
    opt = torch.optim.Adam(groups, lr=1e-3)

    def step() -> None:
        losses = ((model(x) - y) ** 2).mean(dim=0)
        total = losses.sum() if weighting is None else weighting(losses)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if weighting is not None:
            weighting.update(losses.detach())

    return step


def time_steps(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--methods", nargs="+", default=None, help="registry names (default: all weightings)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods or awloss.available("weighting")
    rows = []
    print(f"torch {torch.__version__}, {args.threads} thread(s), MLP 64-{args.width}-{args.width}-T, batch {args.batch}")
    print(f"{'method':<12} {'T':>3} {'sum step (ms)':>14} {'method step (ms)':>17} {'ratio':>7}")
    for num_tasks in args.tasks:
        for name in methods:
            base = make_step(None, num_tasks, args.width, args.batch)
            meth = make_step(name, num_tasks, args.width, args.batch)
            for fn in (base, meth):  # warm-up
                time_steps(fn, 10)
            tb, tm = [], []
            for _ in range(args.rounds):
                tb.append(time_steps(base, args.steps))
                tm.append(time_steps(meth, args.steps))
            b, m = statistics.median(tb), statistics.median(tm)
            rows.append({"method": name, "tasks": num_tasks, "sum_ms": 1e3 * b, "method_ms": 1e3 * m, "ratio": m / b})
            print(f"{name:<12} {num_tasks:>3} {1e3 * b:>14.3f} {1e3 * m:>17.3f} {m / b:>7.3f}")
    return rows


if __name__ == "__main__":
    main()
