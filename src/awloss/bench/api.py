"""``awloss.bench.run``: the bench as a function (the CLI is a thin layer over it).

Example (a notebook)::

    from awloss import bench
    res = bench.run(bench.table("data.csv", targets=["price", "category"]), methods=["ew", "uw", "famo"], seeds=3)
    print(res)                 # the table and the Recommendation: line
    res.verdict["method"]      # "famo", "ew", or None when the bench refuses (one seed, --quick)
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

import awloss

from .datasets import DEFAULT_DATASET, BenchError, Data, DatasetSpec, Metric, get_dataset
from .datasets.table import TableDataset
from .engine import Job, Progress, Workers, default_jobs, execute, fmt_seconds, run_cache_path, warmup_seconds
from .report import FORMATS, format_table, plot_all, render_table, summarise, write_csv, write_json
from .runner import MethodSpec, SkipMethod, build_method, resolve_methods, stl_key
from .verdict import compare_to_ew, recommend

__all__ = ["run", "Results", "resolve_dataset", "DEFAULT_METHODS", "Interrupted"]

DEFAULT_METHODS = ("ew", "uw", "awl", "dwa", "famo", "upgrad")
TRAIN_KEYS = ("epochs", "batch_size", "lr")
SIZE_KEYS = ("train_size", "val_size", "test_size")


class Interrupted(BenchError):
    """Ctrl-C during the runs: the finished ones were written; the message says how to resume."""


@dataclass
class Results:
    """What a bench run produced: ``summary`` (per method), ``verdict`` (the recommendation and its
    statistics), every run, and the output folder (``None`` when nothing was written)."""

    dataset: str
    summary: dict[str, Any]
    verdict: dict[str, Any]
    comparisons: dict[str, Any]
    runs: list[dict[str, Any]]
    stl_runs: list[dict[str, Any]]
    metrics: list[Metric]
    tasks: list[str]
    title: str
    quick: bool = False
    out: Path | None = None
    payload: dict[str, Any] = field(default_factory=dict, repr=False)

    def table(self, fmt: str = "text") -> str:
        """The results table as ``text`` (with the recommendation), ``md``, ``latex`` or ``csv``."""
        verdict: str = self.verdict["text"]
        if fmt == "text":
            return format_table(self.summary, self.metrics, self.title, self.comparisons, self.quick) + "\n" + verdict
        return render_table(fmt, self.summary, self.metrics, self.title, self.comparisons, self.quick, verdict)

    @property
    def recommendation(self) -> str:
        text: str = self.verdict["text"]
        return text

    def __str__(self) -> str:
        return self.table("text")


def _import_factory(text: str) -> Any:
    mod_name, _, attr = text.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `--dataset mymodule:factory` from the project folder
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - the user's module: one line, whatever it raises
        raise BenchError(f"--dataset {text}: cannot import module {mod_name!r}: {type(e).__name__}: {e}") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise BenchError(f"--dataset {text}: module {mod_name!r} has no attribute {attr!r}") from None


def resolve_dataset(dataset: str | DatasetSpec | type[DatasetSpec], data_args: Mapping[str, Any] | None = None,
                    *, quick: bool = False, sizes: Mapping[str, Any] | None = None) -> tuple[DatasetSpec, dict[str, Any]]:  # fmt: skip
    """The dataset instance and its training configuration (epochs, batch_size, lr) for ``dataset``:
    a registered name, ``table:PATH``, ``package.module:factory``, a :class:`DatasetSpec` or subclass."""
    data_args = dict(data_args or {})
    sizes = {k: v for k, v in (sizes or {}).items() if v is not None}
    if isinstance(dataset, str) and dataset.startswith("table:"):
        cls: type[DatasetSpec] = TableDataset
        data_args["path"] = dataset[len("table:"):]
        dataset = TableDataset
    elif isinstance(dataset, str) and ":" in dataset:
        factory = _import_factory(dataset)
        try:
            made = factory(**data_args) if callable(factory) else factory
        except BenchError:
            raise
        except TypeError as e:
            raise BenchError(f"--dataset {dataset}: the factory rejects --data-args {sorted(data_args)}: {e}") from None
        if isinstance(made, type) and issubclass(made, DatasetSpec):
            made = made({})
        if not isinstance(made, DatasetSpec):
            raise BenchError(f"--dataset {dataset} returned {type(made).__name__}, not an awloss.bench.DatasetSpec "
                             "(see `help(awloss.bench.DatasetSpec)` for the protocol)")  # fmt: skip
        data_args = {}
        dataset = made
    elif isinstance(dataset, str):
        dataset = get_dataset(dataset)
    if isinstance(dataset, DatasetSpec):
        cls = type(dataset)
        extra = {**{k: v for k, v in (cls.quick if quick else {}).items() if k not in TRAIN_KEYS}, **sizes}
        dataset.config.update(extra)
        base = {**cls.defaults, **(cls.quick if quick else {}), **dataset.config}
        return dataset, {k: base[k] for k in TRAIN_KEYS if k in base}
    cls = dataset
    cls.check_options(data_args)
    config = {**cls.defaults, **(cls.quick if quick else {}), **data_args, **sizes}
    return cls({k: v for k, v in config.items() if k not in TRAIN_KEYS}), {k: config[k] for k in TRAIN_KEYS if k in config}


def _registered(name: str) -> bool:
    try:
        cls = awloss.get_class(name)
    except KeyError:
        return False
    return getattr(cls, "kind", "weighting") != "aggregator" or hasattr(awloss, "backward")


def method_names(methods: str | Sequence[str] | None) -> list[str]:
    if methods is None:
        return [m for m in DEFAULT_METHODS if m == "ew" or _registered(m)]
    if isinstance(methods, str):
        if methods.strip().lower() == "all":
            return ["ew"] + [m for m in awloss.available() if m not in ("sum", "config") and _registered(m)]
        methods = methods.split(",")
    names = [m.strip().lower() for m in methods if m.strip()]
    if not names:
        raise BenchError("--methods is empty")
    dup = sorted({m for m in names if names.count(m) > 1})
    if dup:
        raise BenchError(f"--methods names {', '.join(dup)} more than once; to compare settings of one method, "
                         "run the bench twice with different --method-args")  # fmt: skip
    return names


def _stand_in(T: int) -> Any:
    """A tiny model with ``.shared`` and ``last_shared_layer()``: lets constructors be tried before loading."""
    from torch import nn

    from .models import MTLModel

    return MTLModel(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), [nn.Linear(2, 1) for _ in range(T)])


def check_method_args(specs: Sequence[MethodSpec], T: int) -> dict[str, str]:
    """Unknown constructor keys and values the constructor rejects → one-line BenchError; skipped methods."""
    skipped = {}
    for spec in specs:
        assert spec.cls is not None  # (resolved methods, not STL runs)
        params: Mapping[str, inspect.Parameter]
        try:
            params = inspect.signature(spec.cls).parameters
        except (TypeError, ValueError):  # pragma: no cover
            params = {}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            accepted = [k for k in params if k != "num_tasks"]
            for key in spec.kwargs:
                if key not in params:
                    raise BenchError(f"--method-args: {spec.label} has no argument {key!r}; its arguments: "
                                     f"{', '.join(accepted) or '(none)'}")  # fmt: skip
        torch.manual_seed(0)
        stage = "be built with its defaults"
        try:
            method = build_method(spec, T, _stand_in(T), 0)
            if spec.kind == "aggregator":  # limits on T that only a call checks (TrimmedMean, Krum need 3 rows)
                stage = f"run on {T} tasks with its defaults"
                method(torch.randn(T, 3))
        except SkipMethod as e:
            skipped[spec.label] = str(e)
        except (TypeError, ValueError, RuntimeError, AttributeError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not spec.kwargs:  # e.g. a method that needs a preference vector: skipped, with how to pass it
                skipped[spec.label] = f"cannot {stage} ({why}); pass --method-args {spec.label}.ARG=…"
                continue
            given = ", ".join(f"{k}={v!r}" for k, v in spec.kwargs.items())
            raise BenchError(f"--method-args: {spec.label} rejects {given}: {why}") from None
    return skipped


def check_out(out: Path, *, force: bool, reuse_runs: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".awloss-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"--out {out} cannot be created or written: {e.strerror or e}") from None
    res = out / "results.json"
    if res.exists() and not force:
        import json

        try:
            interrupted = bool(json.loads(res.read_text(encoding="utf-8")).get("interrupted"))
        except (OSError, ValueError):
            interrupted = False
        if not (interrupted and reuse_runs):
            raise BenchError(f"--out {out} already holds results (results.json); pass --force to overwrite them "
                             "or choose another --out")  # fmt: skip


def versions() -> dict[str, str]:
    out = {"awloss": awloss.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform()}  # fmt: skip
    for mod in ("numpy", "pandas", "sklearn", "matplotlib"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def run(
    dataset: str | DatasetSpec | type[DatasetSpec] = DEFAULT_DATASET,
    methods: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weighting_lr: float = 0.025,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    method_args: Mapping[str, Mapping[str, Any]] | None = None,
    data_args: Mapping[str, Any] | None = None,
    quick: bool = False,
    stl: bool = True,
    cache: bool = True,
    reuse_runs: bool = False,
    selection: str = "best",
    out: str | Path | None = None,
    force: bool = False,
    plots: bool = True,
    progress: bool = True,
    jobs: int | None = None,
    threads: int = 1,
    fmt: str = "text",
    log: TextIO | None = None,
    argv: Sequence[str] | None = None,
) -> Results:
    """Train every (method, seed) on ``dataset`` and compare the methods with EW, paired by seed.

    Args:
        dataset: a registered name (``awloss bench --list``), ``"table:PATH"`` (with ``data_args``
            ``targets``…, or use :func:`awloss.bench.table`), ``"package.module:factory"`` or a
            :class:`DatasetSpec` instance or subclass.
        methods: registry names (a list or a comma string, ``"all"``); default ``DEFAULT_METHODS``.
        seeds: a count (seeds ``0..n-1``) or the seeds themselves. The verdict needs 2 or more.
        jobs: worker processes (default: one per core, at most one per run), each with ``threads`` threads;
            the results do not depend on ``jobs``.
        out: folder for ``table.txt``, ``results.csv``, ``results.json`` and the plots (``None``: nothing is
            written by the API; the CLI passes ``bench-results/<dataset>-<time>``).

    Returns:
        :class:`Results`; ``str(results)`` is the table ending with the ``Recommendation:`` line.
    """
    log = log or sys.stderr
    if isinstance(seeds, int):
        if seeds < 1:
            raise BenchError(f"--seeds must be >= 1, got {seeds}")
        seed_list = list(range(seeds))
    else:
        seed_list = [int(s) for s in seeds]
        if not seed_list or len(set(seed_list)) < len(seed_list):
            raise BenchError(f"--seeds must be distinct and not empty, got {seed_list}")
    for name, v, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("threads", threads, 1), ("jobs", jobs, 1)):
        if v is not None and (isinstance(v, bool) or int(v) != v or v < lo):
            raise BenchError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {v}")
    for name, rate in (("lr", lr), ("weighting_lr", weighting_lr)):
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise BenchError(f"--{name.replace('_', '-')} must be a finite number > 0, got {rate}")
    if selection not in ("best", "last"):
        raise BenchError(f"selection must be 'best' or 'last', got {selection!r}")
    if fmt not in ("text", *FORMATS):
        raise BenchError(f"--format must be one of text, {', '.join(FORMATS)}; got {fmt!r}")
    names = method_names(methods)
    method_args = {k.lower(): dict(v) for k, v in (method_args or {}).items()}
    specs = resolve_methods(names, method_args)
    ds, train_cfg = resolve_dataset(dataset, data_args, quick=quick,
                                    sizes={"train_size": train_size, "val_size": val_size, "test_size": test_size})  # fmt: skip
    for k, given in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)):
        if given is not None:
            train_cfg[k] = given
    train_cfg.setdefault("epochs", 10)
    train_cfg.setdefault("batch_size", 64)
    train_cfg.setdefault("lr", 1e-3)
    train_cfg |= {"weighting_lr": weighting_lr, "selection": selection}
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_out(out_path, force=force, reuse_runs=reuse_runs)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(ds, specs, seed_list, train_cfg, quick=quick, stl=stl, cache=cache, reuse_runs=reuse_runs,
                    out=out_path, plots=plots, progress=progress, jobs=jobs, threads=threads, fmt=fmt, log=log,
                    argv=argv)  # fmt: skip
    finally:
        torch.set_num_threads(old_threads)


def _say(log: TextIO, text: str) -> None:
    print(text, file=log, flush=True)


def _run(ds: DatasetSpec, specs: list[MethodSpec], seeds: list[int], train_cfg: dict[str, Any], *, quick: bool,
         stl: bool, cache: bool, reuse_runs: bool, out: Path | None, plots: bool, progress: bool, jobs: int | None,
         threads: int, fmt: str, log: TextIO, argv: Sequence[str] | None) -> Results:  # fmt: skip
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    skipped = check_method_args(specs, len(ds.tasks))
    import threading

    slow = threading.Timer(2.0, _say, (log, f"awloss bench: loading {ds.name} …"))  # only when loading is slow
    slow.daemon = True
    slow.start()
    t_load = time.time()
    try:
        data: Data = ds.apply_sizes(ds.load())
    finally:
        slow.cancel()
    tasks = list(ds.tasks)
    metrics = ds.metrics()
    if len(data.train.y) != len(tasks) or len(tasks) < 2:
        raise BenchError(f"dataset {ds.name}: {len(tasks)} task name(s) but {len(data.train.y)} target tensor(s); "
                         "a multi-task benchmark needs 2 or more")  # fmt: skip
    _say(log, f"awloss bench: {ds.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test, "
              f"tasks: {', '.join(tasks)} "
              f"({time.time() - t_load:.1f} s)")  # fmt: skip
    for note in data.info.get("tasks_stated", []):
        _say(log, f"  task {note}")
    if data.info.get("ignored_columns"):
        _say(log, f"  non-numeric columns left out of the features: {', '.join(data.info['ignored_columns'])}")
    for m, why in skipped.items():
        _say(log, f"  skipping {m}: {why}")
    specs = [s for s in specs if s.label not in skipped]
    if not specs:
        raise BenchError("no method can run; see the messages above")

    steps = -(-len(data.train) // int(train_cfg["batch_size"])) * int(train_cfg["epochs"])
    stl_specs = [MethodSpec(f"stl:{t}", "stl", task=i) for i, t in enumerate(tasks)] if stl else []
    per_step, t_val, t_test = warmup_seconds(ds, data, [*specs, *stl_specs[:1]], train_cfg)

    def estimate(label: str) -> float:
        return steps * per_step.get(label, per_step.get(stl_specs[0].label if stl_specs else "", 0.0)) + \
            int(train_cfg["epochs"]) * t_val + t_test

    stl_jobs = [Job(s, seed, run_cache_path("stl", ds.name, stl_key(ds, train_cfg, seed, s.task)), reuse=cache)
                for seed in seeds for s in stl_specs]  # fmt: skip
    n_runs = len(stl_jobs) + len(specs) * len(seeds)
    for j in stl_jobs:
        j.estimate_s = estimate(stl_specs[0].label)
    total_est = sum(j.estimate_s for j in stl_jobs) + sum(estimate(s.label) for s in specs) * len(seeds)
    n_jobs = jobs or default_jobs(n_runs, threads, total_est)
    _say(log, f"plan: {len(specs)} method(s){f' + {len(stl_specs)} single-task baselines' if stl_specs else ''} × "
              f"{len(seeds)} seed(s) = {n_runs} runs × {steps} steps ({train_cfg['epochs']} epochs); "
              f"{n_jobs} worker(s) × {threads} thread(s); estimate {fmt_seconds(total_est / n_jobs)}"
              f"{' + worker start-up' if n_jobs > 1 else ''} "
              f"(from a timed warm-up: {1000 * min(per_step.values()):.0f}-{1000 * max(per_step.values()):.0f} ms/step)")  # fmt: skip
    if quick:
        _say(log, "  --quick: a smoke test (tiny subsets, 1-2 epochs); the numbers are not meaningful and not ranked")
    prog = Progress(n_runs, total_est, n_jobs, stream=log, enabled=progress)
    failed: dict[str, str] = {}

    def on_error(job: Job, e: BaseException) -> None:
        failed[f"{job.spec.label}/seed{job.seed}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        _say(log, f"  {job.spec.label} seed {job.seed} failed: {failed[f'{job.spec.label}/seed{job.seed}']}")

    method_jobs: list[Job] = []
    interrupted = False
    t_start = time.time()
    workers = Workers(n_jobs, ds, data, train_cfg, threads)
    try:
        execute(stl_jobs, ds, data, train_cfg, workers=workers, progress=prog, on_error=on_error)
        stl_val: dict[int, dict[str, float]] = {}
        for j in stl_jobs:
            if j.result is not None:
                stl_val.setdefault(j.seed, {}).update({m.name: j.result["val"][m.name] for m in metrics
                                                       if m.task == tasks[j.result["task"]]})  # fmt: skip
        for spec in specs:
            assert spec.cls is not None  # (resolved methods, not STL runs)
            for seed in seeds:
                ident = {"label": spec.label, "class": f"{spec.cls.__module__}.{spec.cls.__qualname__}",
                         "kwargs": spec.kwargs, "ref": stl_val.get(seed)}  # fmt: skip
                key = stl_key(ds, train_cfg, seed, -1, ident)
                job = Job(spec, seed, run_cache_path("runs", ds.name + "-" + spec.label, key), reuse=reuse_runs,
                          ref_val=stl_val.get(seed), estimate_s=estimate(spec.label))  # fmt: skip
                method_jobs.append(job)
        execute(method_jobs, ds, data, train_cfg, workers=workers, progress=prog, on_error=on_error)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        prog.close()
        workers.close(kill=interrupted)
    wall = time.time() - t_start
    runs = [j.result for j in method_jobs if j.result is not None]
    stl_runs = [j.result for j in stl_jobs if j.result is not None]
    if interrupted:
        _say(log, f"awloss bench: interrupted after {len(runs) + len(stl_runs)}/{n_runs} finished runs")
    if not runs and not interrupted:
        raise BenchError("no run finished; see the messages above")

    summary = summarise(runs, stl_runs, metrics, tasks)
    higher = {m.name: m.higher_is_better for m in metrics}
    ew = summary.get("ew_method")
    comparisons = compare_to_ew(runs, higher, ew)
    cost = {m: r["ms_per_step"][0] for m, r in summary["rows"].items()}
    n_paired = min((len(c["seeds"]) for c in comparisons.values()), default=len(seeds))
    verdict = recommend(comparisons, cost, ew=ew, n_seeds=n_paired if comparisons else len(seeds), quick=quick)
    if interrupted:
        verdict["text"] = "Recommendation: none: the bench was interrupted before every run finished."
        verdict["method"] = None
    smoke = "SMOKE TEST (--quick): not meaningful, not ranked. " if quick else ""
    title = (f"{smoke}{ds.name}: {len(seeds)} seed(s), {train_cfg['epochs']} epochs, {len(data.train)} train samples, "
             f"test metrics at the {'best-validation' if train_cfg['selection'] == 'best' else 'last'} epoch")  # fmt: skip
    payload = {
        "config": {"dataset": ds.name, "dataset_config": ds.config, "train": train_cfg, "seeds": seeds,
                   "methods": [{"name": s.label, "kind": s.kind, "class": s.cls.__name__ if s.cls else None,
                                "kwargs": s.kwargs} for s in specs],
                   "argv": list(argv) if argv is not None else None, "quick": quick, "threads": threads,
                   "jobs": n_jobs, "load_average_start": load_start,
                   "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "versions": versions(), "dataset_info": data.info, "metrics": [vars(m) for m in metrics], "tasks": tasks,
        "plan": {"runs": n_runs, "steps_per_run": steps, "estimate_s": total_est / n_jobs, "wall_s": wall,
                 "warmup_ms_per_step": {k: 1000 * v for k, v in per_step.items()}},
        "verdict": verdict, "comparisons_vs_ew": comparisons, "summary": summary, "runs": runs, "stl_runs": stl_runs,
        "skipped": skipped, "failed": failed, "interrupted": interrupted,
    }  # fmt: skip
    res = Results(ds.name, summary, verdict, comparisons, runs, stl_runs, metrics, tasks, title, quick, out, payload)
    if out is not None:
        from .datasets._base import atomic_write_text

        atomic_write_text(out / "table.txt", res.table("text") + "\n")
        if fmt != "text":
            atomic_write_text(out / f"table.{FORMATS[fmt]}", res.table(fmt) + "\n")
        write_csv(out / "results.csv", ds.name, runs, stl_runs, summary, metrics, tasks)
        write_json(out / "results.json", payload)
        written = ["table.txt"] + ([f"table.{FORMATS[fmt]}"] if fmt != "text" else []) + ["results.csv", "results.json"]
        if plots and runs:
            try:
                written += [p.name for p in plot_all(out, res)]
            except ImportError:
                _say(log, "(no plots: matplotlib is missing; install with: pip install 'awloss[bench]')")
        payload["written"] = written
    for m, why in failed.items():
        _say(log, f"failed {m}: {why}")
    if interrupted:
        where = f"; wrote the {len(runs) + len(stl_runs)} finished runs to {out / 'results.json'}" if out else ""
        again = list(argv) if argv is not None else None
        if again is not None:
            if "--reuse-runs" not in again:
                again.append("--reuse-runs")
            if out is not None and not any(a in ("--out", "-o") or a.startswith("--out=") for a in again):
                again += ["--out", str(out)]
            how = "awloss bench " + shlex.join(again)
        else:
            how = "the same call with reuse_runs=True" + (f", out={str(out)!r}" if out else "")
        raise Interrupted(f"interrupted{where}; resume with: {how}")
    return res
