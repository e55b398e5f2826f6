"""Measure the step cost of every registered method; writes docs/data/step_costs.json for the docs tables.

    PYTHONPATH=src python docs/scripts/measure_costs.py [--methods uw dwa] [--rounds 5] [--steps 50]

Loss level: the training step of ``benchmarks/overhead.py`` (a small MLP, Adam) with the method vs a plain
``sum(losses).backward()``. Gradient level: the same model and step with
``awloss.backward(losses, trunk, aggregator)`` in place of ``total.backward()``. Both are timed in the same
run, interleaved in many short rounds, in **CPU time of this process** (``time.process_time``), which a
loaded shared machine disturbs far less than wall time; the ratio of medians is stored per method and
task count. Methods not measured keep their previous entry.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import awloss

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "data" / "step_costs.json"


def _overhead():
    spec = importlib.util.spec_from_file_location("awloss_overhead", ROOT / "benchmarks" / "overhead.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_time(step, steps: int) -> float:
    start = time.process_time()
    for _ in range(steps):
        step()
    return (time.process_time() - start) / steps


def ratio(base, meth, rounds: int, steps: int) -> float:
    for fn in (base, meth):  # warm-up
        cpu_time(fn, 3)
    tb, tm = [], []
    for r in range(rounds):
        pair = ((base, tb), (meth, tm)) if r % 2 == 0 else ((meth, tm), (base, tb))
        for fn, acc in pair:
            acc.append(cpu_time(fn, steps))
    return statistics.median(tm) / statistics.median(tb)


def weighting_ratio(ov, name: str, num_tasks: int, width: int, rounds: int, steps: int) -> float:
    return ratio(ov.make_step(None, num_tasks, width), ov.make_step(name, num_tasks, width), rounds, steps)


def aggregator_ratio(ov, name: str, num_tasks: int, width: int, rounds: int, steps: int) -> float:
    def make(agg_name):
        model, x, y = ov.build(num_tasks, width)
        trunk = model[0]
        agg = None if agg_name is None else awloss.get_class(agg_name)._make_example(num_tasks)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            losses = ((model(x) - y) ** 2).mean(dim=0)
            opt.zero_grad(set_to_none=True)
            if agg is None:
                losses.sum().backward()
            else:
                awloss.backward(losses, trunk, agg)
            opt.step()

        return step

    return ratio(make(None), make(name), rounds, steps)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--tasks", type=int, nargs="+", default=[2, 10])
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ov = _overhead()
    data = json.loads(OUT.read_text()) if OUT.exists() else {"meta": {}, "rows": {}}
    names = args.methods or awloss.available()
    weightings = [n for n in names if getattr(awloss.get_class(n), "kind", "weighting") == "weighting"]
    aggregators = [n for n in names if n not in weightings]
    if aggregators and not hasattr(awloss, "backward"):
        aggregators = []
    for name in weightings + aggregators:
        fn = weighting_ratio if name in weightings else aggregator_ratio
        for T in args.tasks:
            r = fn(ov, name, T, args.width, args.rounds, args.steps)
            print(f"{name:<12} {T:>3} ratio {r:.3f}", flush=True)
            data["rows"].setdefault(name, {})[str(T)] = round(r, 3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    data["meta"] = {
        "setup": f"MLP 64-{args.width}-{args.width}-T, batch 256, Adam, CPU",
        "torch": torch.__version__.split("+")[0],
        "threads": 1,
        "date": datetime.date.today().isoformat(),
        "note": args.note or f"CPU time, median of {args.rounds} interleaved rounds, on a shared 2-core "
        f"machine (load ≈ {load:.1f}): expect ±10 % noise. On a GPU the fixed costs weigh differently.",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
