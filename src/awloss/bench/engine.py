"""Execute the planned runs: a timed warm-up for the estimate, one overall progress line with an ETA,
``--jobs N`` worker processes (one thread each), the per-run cache, and Ctrl-C that keeps finished runs."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import torch

from .datasets import Data, DatasetSpec
from .datasets._base import atomic_write_text, cache_dir, read_json_cache
from .runner import MethodSpec, _shared, build_method, predict, train_run

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

__all__ = ["Job", "Progress", "Workers", "warmup_seconds", "execute", "fmt_seconds", "default_jobs"]


@dataclass
class Job:
    spec: MethodSpec
    seed: int
    cache: Path | None  # where the finished run is cached (read with --reuse-runs or for STL)
    reuse: bool
    ref_val: dict[str, float] | None = None
    estimate_s: float = 0.0
    result: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def title(self) -> str:
        return f"{'STL ' + self.spec.label.split(':', 1)[1] if self.spec.kind == 'stl' else self.spec.label} · seed {self.seed}"


def fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def default_jobs(n_runs: int, threads: int, estimate_s: float = math.inf) -> int:
    """One worker per available core (each with ``threads`` threads), at most one per run; a single
    process when the whole work is estimated under 20 s (starting a worker costs a few seconds)."""
    if estimate_s < 20:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores // max(threads, 1), n_runs))


def warmup_seconds(ds: DatasetSpec, data: Data, specs: Sequence[MethodSpec], cfg: dict[str, Any],
                   steps: int = 3) -> tuple[dict[str, float], float, float]:  # fmt: skip
    """Seconds per training step of each spec (median of ``steps`` after one untimed step), and of one
    validation and one test evaluation. Trains throw-away copies; touches no cache."""
    bs = int(cfg["batch_size"])
    per_step: dict[str, float] = {}
    T = len(data.train.y)
    for spec in specs:
        torch.manual_seed(0)
        model = ds.build_model()
        method: Any = None if spec.kind == "stl" else build_method(spec, T, model, 0)  # a Weighting or an Aggregator
        groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
        if isinstance(method, torch.nn.Module) and hasattr(method, "param_groups"):
            groups += cast(Any, method).param_groups(lr=cfg["weighting_lr"])
        opt = torch.optim.Adam(groups, lr=cfg["lr"])
        times = []
        for i in range(steps + 1):
            idx = torch.arange(i * bs, (i + 1) * bs) % len(data.train)
            x, ys = data.train.x[idx], [y[idx] for y in data.train.y]
            t0 = time.perf_counter()
            losses = torch.stack(ds.task_losses(model(x), ys))
            opt.zero_grad(set_to_none=True)
            if spec.kind == "stl":
                losses[spec.task].backward()
            elif spec.kind == "weighting":
                method(losses).backward()
            else:
                import awloss

                awloss.backward(list(losses), shared_params=_shared(model).parameters(), aggregator=method)
            opt.step()
            if i:
                times.append(time.perf_counter() - t0)
        per_step[spec.label] = sorted(times)[len(times) // 2]
    eval_bs = max(bs, 512)
    t0 = time.perf_counter()
    predict(model, data.val, eval_bs)
    t_val = time.perf_counter() - t0
    return per_step, t_val, t_val * len(data.test) / max(len(data.val), 1)


class Progress:
    """One overall line ``run k/N · method · seed · ETA``; a line per finished run when not a terminal."""

    def __init__(self, total: int, estimate_s: float, jobs: int, stream: TextIO | None = None,
                 enabled: bool = True) -> None:  # fmt: skip
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self.total, self.done, self.jobs = total, 0, jobs
        self.est_left = estimate_s  # estimated seconds of work left (single-worker seconds)
        self.scale = 1.0  # measured / estimated, from finished runs
        self.t0 = time.time()
        self.current = ""

    def eta(self) -> float:
        return self.scale * self.est_left / self.jobs

    def _status(self) -> str:
        return f"run {min(self.done + 1, self.total)}/{self.total} · {self.current} · ETA {fmt_seconds(self.eta())}"

    def start(self, job: Job) -> None:
        self.current = job.title
        if self.tty:
            self.stream.write("\r\033[K" + self._status())
            self.stream.flush()

    def finish(self, job: Job, seconds: float, note: str) -> None:
        self.done += 1
        self.est_left = max(0.0, self.est_left - job.estimate_s)
        if job.estimate_s > 0 and seconds > 0.05:
            ratio = seconds / job.estimate_s
            self.scale = ratio if self.done == 1 else 0.7 * self.scale + 0.3 * ratio
        if not self.enabled:
            return
        line = (f"[{self.done}/{self.total}] {job.title}: {note} ({seconds:.1f} s; elapsed {fmt_seconds(time.time() - self.t0)}"
                f", ETA {fmt_seconds(self.eta())})")  # fmt: skip
        self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
        if self.tty and self.done < self.total:
            self.stream.write(self._status())
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


# -- worker processes ------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(ds: DatasetSpec, data: Data, cfg: dict[str, Any], threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    torch.set_num_threads(threads)
    _WORKER.update(ds=ds, data=data, cfg=cfg)


def _run_in_worker(spec: MethodSpec, seed: int, ref_val: dict[str, float] | None) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    r = train_run(_WORKER["ds"], _WORKER["data"], spec, seed, _WORKER["cfg"], ref_val=ref_val)
    return r, time.perf_counter() - t0


def _describe(r: dict[str, Any], ds: DatasetSpec) -> str:
    own = [k for k in r["test"] if r["task"] is None or any(m.name == k and m.task == ds.tasks[r["task"]]
                                                            for m in ds.metrics())]  # fmt: skip
    vals = ", ".join(f"{k} {r['test'][k]:.4g}" for k in own[:4]) + (" …" if len(own) > 4 else "")
    return f"test {vals}, best epoch {r['best_epoch']}"


def _store(job: Job, r: dict[str, Any]) -> None:
    import json

    job.result = r
    if job.cache is not None:
        atomic_write_text(job.cache, json.dumps(r))


def execute(jobs: Sequence[Job], ds: DatasetSpec, data: Data, cfg: dict[str, Any], *, workers: Workers,
            progress: Progress, on_error: Callable[[Job, BaseException], None]) -> None:  # fmt: skip
    """Run ``jobs`` (results land in ``job.result``); cached ones first. KeyboardInterrupt propagates
    after the finished runs are stored."""
    todo = []
    for job in jobs:
        cached = read_json_cache(job.cache) if (job.cache is not None and job.reuse) else None
        if cached is not None:
            job.result = cached
            progress.finish(job, 0.0, "from the cache")
        else:
            todo.append(job)
    if not todo:
        return
    if workers.n <= 1 or (len(todo) == 1 and workers.pool is None):
        for job in todo:
            progress.start(job)
            t0 = time.perf_counter()
            try:
                r = train_run(ds, data, job.spec, job.seed, cfg, ref_val=job.ref_val)
            except (FloatingPointError, ValueError, RuntimeError) as e:
                on_error(job, e)
                progress.finish(job, time.perf_counter() - t0, f"failed: {type(e).__name__}")
                continue
            _store(job, r)
            progress.finish(job, time.perf_counter() - t0, _describe(r, ds))
        return
    from concurrent.futures import FIRST_COMPLETED, wait

    pool = workers.get()
    pending: dict[Any, Job] = {}
    queue = list(todo)
    try:
        while queue or pending:
            while queue and len(pending) < workers.n:
                job = queue.pop(0)
                with _no_sigint():  # a worker started now inherits SIGINT ignored: Ctrl-C is the parent's
                    pending[pool.submit(_run_in_worker, job.spec, job.seed, job.ref_val)] = job
                progress.start(job)
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                job = pending.pop(fut)
                try:
                    r, seconds = fut.result()
                except (FloatingPointError, ValueError, RuntimeError) as e:
                    on_error(job, e)
                    progress.finish(job, 0.0, f"failed: {type(e).__name__}")
                    continue
                _store(job, r)
                progress.finish(job, seconds, _describe(r, ds))
    except BaseException:
        for fut in pending:
            fut.cancel()
        workers.close(kill=True)
        raise


@contextlib.contextmanager
def _no_sigint() -> Any:
    """Block SIGINT while worker processes may be spawned: a worker inherits the blocked signal (Ctrl-C is
    the parent's alone, no traceback from a half-started worker), and a Ctrl-C pressed meanwhile stays
    pending in the parent and is delivered when the block ends (never lost)."""
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Workers:
    """A lazily started pool of ``n`` spawned worker processes, shared by the STL and the method phase."""

    def __init__(self, n: int, ds: DatasetSpec, data: Data, cfg: dict[str, Any], threads: int) -> None:
        self.n, self.args = n, (ds, data, cfg, threads)
        self.pool: ProcessPoolExecutor | None = None

    def get(self) -> Any:
        if self.pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(max_workers=self.n, mp_context=mp.get_context("spawn"),
                                            initializer=_init_worker, initargs=self.args)  # fmt: skip
        return self.pool

    def close(self, kill: bool = False) -> None:
        if self.pool is None:
            return
        if kill:
            for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                proc.terminate()
            self.pool.shutdown(wait=False, cancel_futures=True)
        else:
            self.pool.shutdown(wait=True)
        self.pool = None


def run_cache_path(kind: str, name: str, key: str) -> Path:
    return cache_dir(kind) / f"{name}-{key}.json"
