"""One training step with each gradient aggregator, against a summed-loss step, the floor of T per-task
backward passes, and TorchJD's ``mtl_backward`` + ``jac_to_grad`` with the same aggregator.

Model: MLP trunk ``Linear(64, W)-ReLU-Linear(W, W)-ReLU`` shared by T heads ``Linear(W, 1)`` (MSE each).
One step = ``zero_grad`` + forward + the gradient computation (+ aggregation), no optimizer update. The
cases run interleaved in rounds (so load drift hits them alike); each figure is the median over rounds
of the mean step time.

* ``sum``   : ``losses.sum().backward()``: the cost of a plain step;
* ``floor`` : ``T`` calls ``autograd.grad(L_t, shared + head_t)``: the per-task gradients, nothing else;
* ``ours``  : ``awloss.backward(losses, trunk.parameters(), aggregator)``;
* ``ours_rep``: the same through the shared representation (MGDA-UB style, ``representation=features``);
* ``torchjd``: ``mtl_backward(losses, features=f)`` then ``jac_to_grad(trunk.parameters(), A)``.

    python benchmarks/aggregators.py [--tasks 2 10 32] [--methods upgrad mgda] [--rounds 5] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

import awloss

TORCHJD = {  # our registry name -> TorchJD aggregator factory (T -> aggregator)
    "grad_mean": lambda T, A: A.Mean(),
    "grad_sum": lambda T, A: A.Sum(),
    "upgrad": lambda T, A: A.UPGrad(),
    "dualproj": lambda T, A: A.DualProj(),
    "mgda": lambda T, A: A.MGDA(),
    "pcgrad": lambda T, A: A.PCGrad(),
    "cagrad": lambda T, A: A.CAGrad(c=0.4),
    "imtl_g": lambda T, A: A.IMTLG(),
    "nash_mtl": lambda T, A: A.NashMTL(n_tasks=T),
    "graddrop": lambda T, A: A.GradDrop(),
    "gradvac": lambda T, A: A.GradVac(),
    "aligned_mtl": lambda T, A: A.AlignedMTL(),
    "config": lambda T, A: A.ConFIG(),
    "grad_constant": lambda T, A: A.Constant(torch.linspace(1.0, 0.1, T) if T > 1 else torch.tensor([0.5])),
    "grad_random": lambda T, A: A.Random(),
    "fairgrad": lambda T, A: A.FairGrad(alpha=1.0),
    "pcd": lambda T, A: A.PCD(),
    "excess_mtl": lambda T, A: A.ExcessMTL(),
    "modo": lambda T, A: A.GramianWeightedAggregator(A.MoDoWeighting()),  # single batch (TorchJD's weighting)
    "sdmgrad": lambda T, A: A.GramianWeightedAggregator(A.SDMGradWeighting()),
    "cr_mogm": lambda T, A: A.GramianWeightedAggregator(A.CRMOGMWeighting(A.MGDAWeighting())),
    "trimmed_mean": lambda T, A: A.TrimmedMean(1 if T >= 3 else 0),
    "krum": lambda T, A: A.Krum(1 if T >= 4 else 0, 1) if T >= 3 else None,  # TorchJD needs T >= f + 3
}


def build(T: int, width: int, batch: int, seed: int = 0):
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
    heads = nn.ModuleList([nn.Linear(width, 1) for _ in range(T)])
    x = torch.randn(batch, 64)
    y = torch.randn(T, batch, 1)
    params = [*trunk.parameters(), *heads.parameters()]

    def forward():
        for p in params:
            p.grad = None
        f = trunk(x)
        return f, [((h(f) - y[t]) ** 2).mean() for t, h in enumerate(heads)]

    return trunk, heads, forward


def cases(name: str, T: int, width: int, batch: int, tja) -> dict:
    trunk, heads, forward = build(T, width, batch)
    shared = list(trunk.parameters())
    per_task = [shared + list(h.parameters()) for h in heads]
    agg = awloss.get_class(name)._make_example(T)
    agg_rep = awloss.get_class(name)._make_example(T)

    def sum_step():
        _, losses = forward()
        torch.stack(losses).sum().backward()

    def floor_step():
        _, losses = forward()
        for t in range(T):
            torch.autograd.grad(losses[t], per_task[t], retain_graph=t < T - 1)

    def ours_step():
        _, losses = forward()
        awloss.backward(losses, shared, agg)

    def ours_rep_step():
        f, losses = forward()
        awloss.backward(losses, shared, agg_rep, representation=f)

    out = {"sum": sum_step, "floor": floor_step, "ours": ours_step, "ours_rep": ours_rep_step}
    if agg.state_per_column:  # DB-MTL, ExcessMTL, MoCo, ...: awloss.backward refuses representation=
        del out["ours_rep"]
    ref = TORCHJD[name](T, tja) if tja is not None and name in TORCHJD else None
    if ref is not None:
        from torchjd.autojac import jac_to_grad, mtl_backward

        def torchjd_step():
            f, losses = forward()
            mtl_backward(losses, features=f)
            jac_to_grad(shared, ref)

        out["torchjd"] = torchjd_step
    return out


def time_case(fn, steps: int, clock=time.perf_counter) -> float:
    start = clock()
    for _ in range(steps):
        fn()
    return (clock() - start) / steps


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 10, 32])
    parser.add_argument("--methods", nargs="+", default=None, help="registry names (default: all aggregators)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-torchjd", action="store_true", help="skip the TorchJD column")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall (perf_counter) or this process's CPU time (steadier on a loaded machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tja = None
    if not args.no_torchjd:
        try:
            import torchjd.aggregation as tja
        except ImportError:
            print("torchjd not installed (pip install 'awloss[test]'): TorchJD column skipped")
    methods = args.methods or awloss.available("aggregator")
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"torch {torch.__version__}, {args.threads} thread(s), MLP 64-{args.width}-{args.width} + T x Linear"
          f"({args.width},1), batch {args.batch}, medians of {args.rounds} rounds x {args.steps} steps, {args.clock} clock")
    head = (f"{'method':<12}{'T':>3}{'sum ms':>9}{'floor ms':>10}{'ours ms':>9}{'/floor':>8}{'rep ms':>8}"
            f"{'/floor':>8}{'torchjd ms':>12}{'jd/ours':>9}")
    print(head)
    rows = []
    warnings.filterwarnings("ignore")
    for T in args.tasks:
        for name in methods:
            fns = cases(name, T, args.width, args.batch, tja)
            for fn in fns.values():
                fn()  # warm-up
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(args.rounds):
                for k, fn in fns.items():
                    times[k].append(time_case(fn, args.steps, clock))
            med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            row = {"method": name, "tasks": T, **{f"{k}_ms": v for k, v in med.items()}}
            row["ours_over_floor"] = med["ours"] / med["floor"]
            row["rep_over_floor"] = med["ours_rep"] / med["floor"] if "ours_rep" in med else None
            jd = med.get("torchjd")
            row["torchjd_over_ours"] = jd / med["ours"] if jd else None
            rows.append(row)
            rep_s = f"{med['ours_rep']:>8.2f}{row['rep_over_floor']:>8.2f}" if "ours_rep" in med else f"{'-':>8}{'-':>8}"
            jd_s = f"{jd:>12.2f}{jd / med['ours']:>9.2f}" if jd else f"{'-':>12}{'-':>9}"
            print(f"{name:<12}{T:>3}{med['sum']:>9.2f}{med['floor']:>10.2f}{med['ours']:>9.2f}"
                  f"{row['ours_over_floor']:>8.2f}{rep_s}{jd_s}", flush=True)
    return rows


if __name__ == "__main__":
    main()
