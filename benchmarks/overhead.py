"""Overhead of each registered loss-level weighting over a plain summed-loss training step.

One training step = forward of a small MLP trunk with T linear heads, per-task MSE, the combination
(plain ``losses.sum()`` or the weighting), ``zero_grad``, ``backward`` and ``Adam.step`` (the weighting's own
parameters in their own group). Both paths are timed in the same run, interleaved in rounds so drift hits
both alike; the reported figure is the ratio of medians.

GradNorm needs one extra backward per task from its loss to the last shared layer (that is the method);
its row is compared with a plain step that does the same ``torch.autograd.grad`` calls ("sum+grads"),
and its ratio to the plain step is printed alongside.

``--timer process`` (default) measures the CPU time of this process, which other processes on a shared
machine disturb much less than wall-clock time; ``--timer wall`` measures wall-clock time (use it on a GPU).

    python benchmarks/overhead.py [--tasks 2 10] [--rounds 7] [--steps 100] [--methods uw awl] [--timer wall]
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


# Methods whose own work includes extra backward passes: name -> the plain step they are compared with.
NEEDS_SHARED_GRADS = {"gradnorm"}


def make_step(
    method_name: str | None, num_tasks: int, width: int, batch: int = 256, *, shared_grads: bool = False
):
    """A training-step closure; ``shared_grads`` adds one ``autograd.grad`` per task to the last shared layer."""
    model, x, y = build(num_tasks, width, batch)
    shared = list(model[0][-2].parameters())  # the trunk's last Linear: GradNorm's W
    weighting = None
    groups = [{"params": list(model.parameters())}]
    if method_name == "gradnorm":
        weighting = awloss.GradNorm(num_tasks, shared=shared)
    elif method_name is not None:
        weighting = awloss.get_class(method_name)._make_example(num_tasks)
    if weighting is not None:
        groups += weighting.param_groups(lr=0.025)
    opt = torch.optim.Adam(groups, lr=1e-3)

    def step() -> None:
        losses = ((model(x) - y) ** 2).mean(dim=0)
        if shared_grads:
            for i in range(num_tasks):
                torch.autograd.grad(losses[i], shared, retain_graph=True)
        total = losses.sum() if weighting is None else weighting(losses)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if weighting is not None:
            weighting.update(losses.detach())

    return step


def time_steps(step, steps: int, clock=time.process_time) -> float:
    start = clock()
    for _ in range(steps):
        step()
    return (clock() - start) / steps


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--methods", nargs="+", default=None, help="registry names (default: all weightings)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timer", choices=["process", "wall"], default="process")
    parser.add_argument(
        "--stat", choices=["median", "min"], default="median", help="per-round statistic (min: least disturbed)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.timer == "process" else time.perf_counter
    methods = args.methods or awloss.available("weighting")
    rows = []
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), MLP 64-{args.width}-{args.width}-T, "
        f"batch {args.batch}, {args.timer} time, {args.stat} of {args.rounds} rounds x {args.steps} steps"
    )
    print(f"{'method':<12} {'T':>3} {'baseline':>10} {'base step (ms)':>15} {'method step (ms)':>17} {'ratio':>7}")
    for num_tasks in args.tasks:
        for name in methods:
            extra = name in NEEDS_SHARED_GRADS
            plain = make_step(None, num_tasks, args.width, args.batch)
            base = make_step(None, num_tasks, args.width, args.batch, shared_grads=extra)
            meth = make_step(name, num_tasks, args.width, args.batch)
            fns = (plain, base, meth) if extra else (base, meth)
            for fn in fns:  # warm-up
                time_steps(fn, 10, clock)
            times: list[list[float]] = [[] for _ in fns]
            for _ in range(args.rounds):
                for fn, acc in zip(fns, times):
                    acc.append(time_steps(fn, args.steps, clock))
            stat = statistics.median if args.stat == "median" else min
            med = [stat(t) for t in times]
            b, m = med[-2], med[-1]
            row = {"method": name, "tasks": num_tasks, "sum_ms": 1e3 * b, "method_ms": 1e3 * m, "ratio": m / b}
            label = "sum+grads" if extra else "sum"
            if extra:
                row["plain_sum_ms"], row["ratio_to_plain_sum"] = 1e3 * med[0], m / med[0]
            rows.append(row)
            print(f"{name:<12} {num_tasks:>3} {label:>10} {1e3 * b:>15.3f} {1e3 * m:>17.3f} {m / b:>7.3f}")
            if extra:
                print(f"{'':<12} {'':>3} {'sum':>10} {1e3 * med[0]:>15.3f} {1e3 * m:>17.3f} {m / med[0]:>7.3f}")
    return rows


if __name__ == "__main__":
    main()
