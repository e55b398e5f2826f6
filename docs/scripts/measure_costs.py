"""Measure the step cost of every registered method; writes docs/data/step_costs.json for the docs tables.

    PYTHONPATH=src python docs/scripts/measure_costs.py [--methods uw dwa] [--rounds 5] [--steps 50]

Loss level: ``benchmarks/overhead.py`` (a training step of a small MLP with the method vs a plain
``sum(losses).backward()``, interleaved in the same run). Gradient level: the same model and step with
``awloss.backward(losses, trunk, aggregator)`` in place of ``total.backward()``. The ratio of medians is
stored per method and task count; methods not measured keep their previous entry.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import sys
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

    base, meth = make(None), make(name)
    for fn in (base, meth):
        ov.time_steps(fn, 3)
    tb, tm = [], []
    for _ in range(rounds):
        tb.append(ov.time_steps(base, steps))
        tm.append(ov.time_steps(meth, steps))
    return statistics.median(tm) / statistics.median(tb)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--tasks", type=int, nargs="+", default=[2, 10])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ov = _overhead()
    data = json.loads(OUT.read_text()) if OUT.exists() else {"meta": {}, "rows": {}}
    names = args.methods or awloss.available()
    weightings = [n for n in names if getattr(awloss.get_class(n), "kind", "weighting") == "weighting"]
    aggregators = [n for n in names if n not in weightings]
    if weightings:
        argv_w = ["--methods", *weightings, "--tasks", *map(str, args.tasks), "--rounds", str(args.rounds),
                  "--steps", str(args.steps), "--width", str(args.width)]
        for row in ov.main(argv_w):
            data["rows"].setdefault(row["method"], {})[str(row["tasks"])] = round(row["ratio"], 3)
    for name in aggregators:
        if not hasattr(awloss, "backward"):
            break
        for T in args.tasks:
            r = aggregator_ratio(ov, name, T, args.width, args.rounds, args.steps)
            print(f"{name:<12} {T:>3} ratio {r:.3f}", flush=True)
            data["rows"].setdefault(name, {})[str(T)] = round(r, 3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    data["meta"] = {
        "setup": f"MLP 64-{args.width}-{args.width}-T, batch 256, Adam, CPU",
        "torch": torch.__version__.split("+")[0],
        "threads": 1,
        "date": datetime.date.today().isoformat(),
        "note": args.note or f"Measured on a shared 2-core machine (load ≈ {load:.1f}): ±10 % noise; "
        "on a GPU the fixed costs weigh differently.",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
