"""The ``awloss`` command: ``awloss bench`` (compare methods on a dataset), ``awloss demo``, ``--version``.

Examples::

    awloss bench                                   # embedded MultiDigits, no download (see README for the time)
    awloss bench --dataset table:data.csv --targets price,category --seeds 3
    awloss bench --dataset mypackage.data:make_dataset --data-args size=1000
    awloss bench --dataset multifashion --methods ew,uw,awl,dwa,famo,pcgrad,upgrad --seeds 3 --epochs 10
    awloss bench --list
    awloss bench --quick --methods ew,uw --method-args uw.regularizer=log1p

Every bad argument is one line on stderr and exit status 2; Ctrl-C keeps the finished runs (exit 130).
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import awloss

from .api import DEFAULT_METHODS, Interrupted, run
from .datasets import DATASETS, DEFAULT_DATASET, BenchError
from .report import FORMATS

__all__ = ["main", "build_parser", "parse_method_args", "parse_data_args", "parse_seeds"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``awloss bench: error: …`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number > 0, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    top = _Parser(prog="awloss", description="awloss: multi-task loss weighting and gradient aggregation for PyTorch.")
    top.add_argument("--version", action="version", version=f"awloss {awloss.__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("bench", help="compare multi-task methods on a dataset (yours or a bundled one)",
                       description="Train one small multi-task network per (method, seed), compare every method with "
                                   "equal weighting (EW) paired by seed, and end with a Recommendation: line.")  # fmt: skip
    sub.add_parser("demo", help="the two-regression demo: learned σ of uncertainty weighting vs the truth",
                   description="Run awloss.demo (python -m awloss.demo).")  # fmt: skip
    p.add_argument("--list", action="store_true", help="list datasets and registered methods, then exit")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", "-d", default=DEFAULT_DATASET,
                   help=f"a bundled dataset (default {DEFAULT_DATASET}; see --list), table:PATH (a CSV/Parquet file) "
                        "or package.module:factory (a function returning an awloss.bench.DatasetSpec)")  # fmt: skip
    d.add_argument("--targets", default=None, help="table: the target columns, e.g. price,category (2 or more)")
    d.add_argument("--task-types", default=None,
                   help="table: regression or classification per target (default: inferred and stated)")  # fmt: skip
    d.add_argument("--features", default=None, help="table: feature columns (default all-other-numeric)")
    d.add_argument("--split", default=None,
                   help="table: a column holding train/val/test, or fractions (default 0.7,0.15,0.15)")  # fmt: skip
    d.add_argument("--data-args", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dataset options, e.g. depth_noise=0.5 (scenes), noise=0.1,1,3 (synthetic)")  # fmt: skip
    d.add_argument("--train-size", type=_int_at_least(1), default=None, help="a random subset of the training set")
    d.add_argument("--val-size", type=_int_at_least(1), default=None)
    d.add_argument("--test-size", type=_int_at_least(1), default=None)
    m = p.add_argument_group("methods and training")
    m.add_argument("--methods", "-m", default=None,
                   help=f"comma-separated registry names, or 'all' (default {','.join(DEFAULT_METHODS)})")  # fmt: skip
    m.add_argument("--method-args", nargs="*", default=[], metavar="METHOD.ARG=VALUE",
                   help="constructor arguments, e.g. famo.gamma=0.001 uw.regularizer=log1p")  # fmt: skip
    m.add_argument("--seeds", default=None, help="number of seeds (0..N-1) or a comma list, e.g. 0,1,2 (default 3)")
    m.add_argument("--epochs", type=_int_at_least(1), default=None, help="training epochs (default: the dataset's)")
    m.add_argument("--batch-size", type=_int_at_least(1), default=None)
    m.add_argument("--lr", type=_positive_float, default=None, help="learning rate of the network (Adam)")
    m.add_argument("--weighting-lr", type=_positive_float, default=0.025,
                   help="learning rate of the weighting's own parameters (default 0.025, as Nash-MTL)")  # fmt: skip
    m.add_argument("--selection", choices=("best", "last"), default="best",
                   help="test metrics at the best-validation epoch (default) or the last one")  # fmt: skip
    m.add_argument("--quick", action="store_true",
                   help="a smoke test in seconds: tiny subsets, 1-2 epochs, 1 seed; numbers not meaningful, not ranked")  # fmt: skip
    m.add_argument("--no-stl", action="store_true", help="skip the single-task baselines (Δm%% only vs EW)")
    r = p.add_argument_group("running")
    r.add_argument("--jobs", "-j", type=_int_at_least(1), default=None,
                   help="parallel worker processes (default: one per core); results do not depend on it")  # fmt: skip
    r.add_argument("--threads", type=_int_at_least(1), default=1, help="torch threads per run (default 1)")
    r.add_argument("--no-cache", action="store_true", help="retrain the STL baselines even if cached")
    r.add_argument("--reuse-runs", action="store_true",
                   help="reuse finished method runs of the same configuration from the cache (to resume after Ctrl-C)")  # fmt: skip
    r.add_argument("--no-progress", action="store_true", help="no progress output")
    o = p.add_argument_group("output")
    o.add_argument("--out", "-o", default=None, help="output folder (default bench-results/<dataset>-<time>)")
    o.add_argument("--force", action="store_true", help="overwrite the results in an existing --out")
    o.add_argument("--format", choices=tuple(FORMATS), default=None,
                   help="also export the table as Markdown, LaTeX or CSV (table.md / table.tex / table.csv)")  # fmt: skip
    o.add_argument("--no-plots", action="store_true")
    return top


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return float(text)  # nan, inf
    except ValueError:
        return text


def parse_method_args(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, val = item.partition("=")
        method, dot, arg = key.partition(".")
        if not eq or not dot or not method.strip() or not arg.strip():
            raise BenchError(f"--method-args expects METHOD.ARG=VALUE (e.g. famo.gamma=0.001), got {item!r}")
        slot = out.setdefault(method.strip().lower(), {})
        if arg.strip() in slot:
            raise BenchError(f"--method-args sets {method.strip()}.{arg.strip()} twice")
        slot[arg.strip()] = _value(val.strip())
    return out


def parse_data_args(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise BenchError(f"--data-args expects KEY=VALUE (e.g. depth_noise=0.5), got {item!r}")
        out[key.strip()] = _value(val.strip())
    return out


def parse_seeds(text: str) -> list[int]:
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
            if not seeds or len(set(seeds)) < len(seeds) or min(seeds) < 0:
                raise ValueError
            return seeds
        n = int(text)
    except ValueError:
        raise BenchError(f"--seeds expects a count >= 1 or a comma list of distinct ints >= 0, got {text!r}") from None
    if n < 1:
        raise BenchError(f"--seeds must be >= 1, got {n}")
    return list(range(n))


def list_everything() -> str:
    lines = ["Datasets (name: description | data source | install):"]
    for name, cls in DATASETS.items():
        tag = " (default)" if name == DEFAULT_DATASET else ""
        lines.append(f"  {name}{tag}: {cls.description}")
        lines.append(f"      data: {cls.source}" + (f" | install: {cls.install}" if cls.install else ""))
    lines.append("  table:PATH: your CSV/Parquet file (--targets a,b [--task-types] [--features] [--split])")
    lines.append("  package.module:factory: your Python function returning an awloss.bench.DatasetSpec")
    for kind in ("weighting", "aggregator"):
        names = awloss.available(kind)
        lines.append(f"Methods, kind {kind!r} ({len(names)}): {', '.join(names) if names else '(none registered yet)'}")
    lines.append("  'ew' always works (the registry's `sum`, or a built-in plain sum).")
    return "\n".join(lines)


def bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.list:
        print(list_everything())
        return 0
    data_args = parse_data_args(args.data_args)
    table_opts = {"targets": args.targets, "task_types": args.task_types, "features": args.features, "split": args.split}
    given = {k: v for k, v in table_opts.items() if v is not None}
    is_table = args.dataset.startswith("table:")
    if given and not is_table:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise BenchError(f"{flags} only apply to --dataset table:PATH (got --dataset {args.dataset})")
    if is_table:
        if args.targets is None:
            raise BenchError("--dataset table:PATH needs --targets (2 or more columns, e.g. --targets y1,y2)")
        data_args.update(given)
    seeds = parse_seeds(args.seeds or ("1" if args.quick else "3"))
    name = args.dataset.split(":", 1)[-1] if ":" in args.dataset else args.dataset
    stem = Path(name).stem if is_table else name.replace(":", "-").replace(".", "-")
    out = Path(args.out) if args.out else Path("bench-results") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    res = run(args.dataset, args.methods, seeds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
              weighting_lr=args.weighting_lr, train_size=args.train_size, val_size=args.val_size,
              test_size=args.test_size, method_args=parse_method_args(args.method_args), data_args=data_args,
              quick=args.quick, stl=not args.no_stl, cache=not args.no_cache, reuse_runs=args.reuse_runs,
              selection=args.selection, out=out, force=args.force, plots=not args.no_plots,
              progress=not args.no_progress, jobs=args.jobs, threads=args.threads, fmt=args.format or "text",
              argv=argv)  # fmt: skip
    print(f"wrote {', '.join(res.payload.get('written', []))} to {out}", file=sys.stderr, flush=True)
    print(res.table("text"), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``awloss`` console script (and ``python -m awloss``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line usage error
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if args.command is None:
        parser.print_help()
        return 0 if not argv else 2
    prog = f"awloss {args.command}"
    try:
        if args.command == "demo":
            from awloss import demo

            demo.main()
            return 0
        return bench(args, argv[argv.index("bench") + 1 :])
    except Interrupted as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 130
    except BenchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # never a traceback for a user; AWLOSS_DEBUG=1 shows it
        if os.environ.get("AWLOSS_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"{prog}: internal error: {type(e).__name__}: {msg} (rerun with AWLOSS_DEBUG=1 for the traceback, "
              "and please report it)", file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
