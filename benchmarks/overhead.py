"""Overhead of each registered loss-level weighting over a plain summed-loss training step.

One training step = forward of a model with T task heads, per-task MSE, the combination (plain
``losses.sum()`` or the weighting), ``zero_grad``, ``backward`` and ``Adam.step`` (the weighting's own
parameters in their own group). Both paths are timed in the same run, interleaved in rounds so drift hits
both alike; the reported figure is the ratio of medians (target: <= 1.02 on the conv and transformer
workloads). Beside each ratio: ``+ops``, the aten ops the method's step dispatches beyond the plain step's
(counted with a ``TorchDispatchMode``; on a GPU each is a kernel launch or a dispatcher round trip).

Workloads (``--workloads``): ``mlp`` (64-W-W-T, batch 256), ``conv`` (a 4-layer CNN on 3x32x32 images,
batch 64) and ``transformer`` (a 2-layer encoder, d_model 128, 32 tokens, batch 32), each with T heads.

GradNorm needs one extra backward per task from its loss to the last shared layer (that is the method);
its row is compared with a plain step that does the same ``torch.autograd.grad`` calls ("sum+grads"),
and its ratio to the plain step is printed alongside.

``--timer process`` (default) measures the CPU time of this process, which other processes on a shared
machine disturb much less than wall-clock time; ``--timer wall`` measures wall-clock time (use it on a GPU,
with ``--device cuda``: the clock then synchronises at the end of each round only).

    python benchmarks/overhead.py [--workloads mlp conv transformer] [--tasks 2 10] [--rounds 7] [--steps 100]
                                  [--methods uw awl] [--timer wall] [--device cuda] [--out results.txt]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import awloss


def build(num_tasks: int, width: int, batch: int = 256, seed: int = 0, workload: str = "mlp", device: str = "cpu"):
    """``(model, x, y)``: ``model(x)`` is ``[batch, T]``; ``model[0]`` is the shared trunk."""
    torch.manual_seed(seed)
    if workload == "mlp":
        trunk = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        heads = nn.Linear(width, num_tasks)  # T scalar heads, batched
        x = torch.randn(batch, 64)
    elif workload == "conv":
        c = 32
        trunk = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        heads = nn.Linear(2 * c, num_tasks)
        x = torch.randn(batch if batch != 256 else 64, 3, 32, 32)
    elif workload == "transformer":
        layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.0, batch_first=True)
        trunk = nn.Sequential(nn.Linear(16, 128), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), _MeanTokens())
        heads = nn.Linear(128, num_tasks)
        x = torch.randn(batch if batch != 256 else 32, 32, 16)
    else:
        raise ValueError(f"Unknown workload {workload!r}: choose mlp, conv or transformer.")
    model = nn.Sequential(trunk, heads).to(device)
    x = x.to(device)
    y = (torch.randn(x.shape[0], num_tasks) * torch.logspace(0, 2, num_tasks)).to(device)
    return model, x, y


class _MeanTokens(nn.Module):
    def forward(self, x):  # type: ignore[no-untyped-def]
        return x.mean(dim=1)


def _shared_layer(model: nn.Module) -> list:
    """The trunk's last layer with parameters (GradNorm's W)."""
    last = [m for m in model[0].modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return list(last.parameters())


# Methods whose own work includes extra backward passes: name -> the plain step they are compared with.
NEEDS_SHARED_GRADS = {"gradnorm"}


def make_step(
    method_name: str | None,
    num_tasks: int,
    width: int,
    batch: int = 256,
    *,
    shared_grads: bool = False,
    workload: str = "mlp",
    device: str = "cpu",
):
    """A training-step closure; ``shared_grads`` adds one ``autograd.grad`` per task to the last shared layer."""
    model, x, y = build(num_tasks, width, batch, workload=workload, device=device)
    shared = _shared_layer(model)
    weighting = None
    groups = [{"params": list(model.parameters())}]
    if method_name == "gradnorm":
        weighting = awloss.GradNorm(num_tasks, shared=shared)
    elif method_name is not None:
        weighting = awloss.get_class(method_name)._make_example(num_tasks)
    if weighting is not None:
        weighting.to(device)
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


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(step) -> int:
    """Aten ops dispatched by one call of ``step`` (after it ran a few times)."""
    with _OpCounter() as counter:
        step()
    return counter.count


def time_steps(step, steps: int, clock=time.process_time) -> float:
    start = clock()
    for _ in range(steps):
        step()
    return (clock() - start) / steps


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["mlp", "conv", "transformer"])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--methods", nargs="+", default=None, help="registry names (default: all weightings)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256, help="MLP batch (conv: 64, transformer: 32 unless set)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timer", choices=["process", "wall"], default="process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument(
        "--stat", choices=["median", "min"], default="median", help="per-round statistic (min: least disturbed)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if args.timer == "process":
        clock = time.process_time
    elif cuda:
        def clock() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()
    else:
        clock = time.perf_counter
    methods = args.methods or awloss.available("weighting")
    rows = []
    lines = [
        f"torch {torch.__version__}, {args.device}, {args.threads} thread(s), {args.timer} time, {args.stat} of "
        f"{args.rounds} rounds x {args.steps} steps; +ops: aten ops per step beyond the baseline's",
        f"{'workload':<12} {'method':<12} {'T':>3} {'baseline':>10} {'base step (ms)':>15} {'method step (ms)':>17} "
        f"{'ratio':>7} {'+ops':>5}",
    ]
    for line in lines:
        print(line)
    for workload in args.workloads:
        for num_tasks in args.tasks:
            for name in methods:
                extra = name in NEEDS_SHARED_GRADS
                kw = {"workload": workload, "device": args.device}
                plain = make_step(None, num_tasks, args.width, args.batch, **kw)
                base = make_step(None, num_tasks, args.width, args.batch, shared_grads=extra, **kw)
                meth = make_step(name, num_tasks, args.width, args.batch, **kw)
                fns = (plain, base, meth) if extra else (base, meth)
                for fn in fns:  # warm-up
                    time_steps(fn, 10 if args.steps >= 10 else 3, clock)
                ops = count_ops(meth) - count_ops(base)
                times: list[list[float]] = [[] for _ in fns]
                for _ in range(args.rounds):
                    for fn, acc in zip(fns, times):
                        acc.append(time_steps(fn, args.steps, clock))
                stat = statistics.median if args.stat == "median" else min
                med = [stat(t) for t in times]
                b, m = med[-2], med[-1]
                row = {
                    "workload": workload, "method": name, "tasks": num_tasks, "sum_ms": 1e3 * b, "method_ms": 1e3 * m,
                    "ratio": m / b, "extra_ops": ops,
                }
                label = "sum+grads" if extra else "sum"
                if extra:
                    row["plain_sum_ms"], row["ratio_to_plain_sum"] = 1e3 * med[0], m / med[0]
                rows.append(row)
                out = [
                    f"{workload:<12} {name:<12} {num_tasks:>3} {label:>10} {1e3 * b:>15.3f} {1e3 * m:>17.3f} "
                    f"{m / b:>7.3f} {ops:>5}"
                ]
                if extra:
                    out.append(f"{'':<12} {'':<12} {'':>3} {'sum':>10} {1e3 * med[0]:>15.3f} {1e3 * m:>17.3f} "
                               f"{m / med[0]:>7.3f}")
                for line in out:
                    print(line)
                lines += out
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
