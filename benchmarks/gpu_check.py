"""The GPU check: what only an accelerator can show, in one run of under five minutes on one GPU.

1. **No host synchronisation**: every registered weighting and aggregator runs whole training steps
   (forward, the method, backward, ``optimizer.step()``, ``update()``) under
   ``torch.cuda.set_sync_debug_mode("error")``: any ``.item()``, ``bool(tensor)``, blocking copy or
   ``cudaStreamSynchronize`` raises. The deferred checks must stay sync-free, and still raise one call late.
2. **fp16 autocast + GradScaler** for every weighting (``scaler.scale(total).backward()``) and through
   ``awloss.backward(..., scaler=)`` for every aggregator: finite weights, the scaler steps.
3. **torch.compile(mode="reduce-overhead")** (CUDA graphs) of a loss-level step (UW, AWL, Sum).
4. **NCCL with one process**: a process group on the GPU, a weighting step with ``sync=True`` and an
   ``awloss.backward`` step, and one all-reduce of a flag.
5. **loop vs batched** per-task gradients (``awloss.backward(method=...)``, UPGrad) at T = 2 / 10 / 32 on
   a conv and a transformer workload: ms per step, and the **peak memory** of each.
6. **The gramian engine** (``method="gramian"``, UPGrad) at T = 10 / 32 on the same workloads, against the
   floor of T plain backwards (``autograd.grad`` of each loss, no aggregation) and ``method="loop"``: its
   per-task passes forced to a loop (``gram_loop``) and batched in one vmap-ed backward (``gram_batched``)
   by replacing ``awloss._backward._engine.auto_batches`` for the call. Ms per step, gram_batched/floor and
   gram_batched/loop, the peak memory, the backward passes and host reads of one step, per variant; a row
   passes when every variant ran and the two gramian variants' weights agree (rtol 1e-4) on the same first
   step (taken without TF32, so that both see the same arithmetic).

Writes ``benchmarks/results/gpu_check.txt`` (and ``gpu_check.json``). ``--dry-run`` runs the same code on
the CPU at toy sizes (host reads are then counted with a ``TorchFunctionMode`` instead of the CUDA sync
debug mode; bf16 autocast; gloo instead of NCCL; the compile step with the eager backend) so that the
script itself is tested without a GPU::

    python benchmarks/gpu_check.py            # on a machine with CUDA
    python benchmarks/gpu_check.py --dry-run  # anywhere (a test runs this)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import awloss
from awloss import _checks
from awloss._backward import _engine

HERE = Path(__file__).resolve().parent
T_DEFAULT = 3
READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"}


class Net(nn.Module):
    """A shared trunk and one linear head per task (the method checks' model)."""

    def __init__(self, num_tasks: int, width: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(num_tasks))

    def losses(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x)
        return [(head(h).squeeze(1) - i).pow(2).mean() + 0.01 for i, head in enumerate(self.heads)]


class _HostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name in READS and args and isinstance(args[0], torch.Tensor):
            self.names.append(name)
        return func(*args, **(kwargs or {}))


def make_weighting(name: str, net: Net, device: str):
    w = awloss.GradNorm(len(net.heads), shared=net.trunk[2]) if name == "gradnorm" else None
    if w is None:
        w = awloss.get_class(name)._make_example(len(net.heads))
    return w.to(device)


def weighting_step(w, net: Net, opt, x, scaler=None, autocast_dtype=None) -> torch.Tensor:
    dev = x.device.type
    with torch.autocast(dev, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        losses = net.losses(x)
        total = w(losses)
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        total.backward()
        opt.step()
    else:
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()
    w.update(torch.stack([v.detach().float() for v in losses]))
    return total


def aggregator_step(agg, net: Net, opt, x, scaler=None, autocast_dtype=None, method: str = "auto"):
    dev = x.device.type
    with torch.autocast(dev, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        losses = net.losses(x)
    opt.zero_grad(set_to_none=True)
    out = awloss.backward(losses, net.trunk.parameters(), agg, scaler=scaler, method=method)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)
        scaler.update()
    return out


def _sync_free(step, device: str, steps: int) -> str:
    """Run ``step`` under the sync debug mode (CUDA) or the host-read counter (CPU, strict): "" = clean."""
    for _ in range(3):  # warm-up: lazy state, the first deferred flags, cached buffers
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(steps):
                step()
        except RuntimeError as e:
            return str(e).splitlines()[0][:160]
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        return ""
    with _checks.strict_host_reads():
        step()  # the previous step's flag is read here: allowed (one read of an earlier flag)
        with _HostReads() as reads:
            for _ in range(steps):
                step()
    extra = len(reads.names) - steps  # one deferred read per step is allowed on the CPU
    return "" if extra <= 0 else f"{len(reads.names)} host reads in {steps} steps: {reads.names[:6]}"


def _optimizer(net: Net, w, device: str):
    """Adam on CUDA (its step counts stay on the host there: no sync); SGD on the CPU, where Adam's
    ``step.item()`` would be counted as a host read by the CPU proxy."""
    groups = [{"params": list(net.parameters())}, *(w.param_groups(lr=0.01) if w is not None else [])]
    return torch.optim.Adam(groups, lr=1e-3) if device.startswith("cuda") else torch.optim.SGD(groups, lr=1e-3)


def _methods(kind: str, only: list[str] | None) -> list[str]:
    return [n for n in awloss.available(kind) if only is None or n in only]


def check_methods(device: str, steps: int, only: list[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    x = torch.randn(32, 16, device=device)
    for kind in ("weighting", "aggregator"):
        for name in _methods(kind, only):
            torch.manual_seed(0)
            net = Net(T_DEFAULT).to(device)
            try:
                if kind == "weighting":
                    m = make_weighting(name, net, device)
                    opt = _optimizer(net, m, device)
                    problem = _sync_free(lambda: weighting_step(m, net, opt, x), device, steps)
                else:
                    m = awloss.get_class(name)._make_example(T_DEFAULT).to(device)
                    opt = _optimizer(net, None, device)
                    problem = _sync_free(lambda: aggregator_step(m, net, opt, x), device, steps)
                m.verify()  # nothing pending failed
                if problem == "":  # the deferred check still reports (sync allowed again here)
                    problem = _late_error(m, net, x, kind)
            except Exception as e:  # noqa: BLE001 - reported in the table
                problem = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            rows.append({"check": "sync-free step", "kind": kind, "method": name, "ok": problem == "", "note": problem})
    return rows


def _late_error(m, net: Net, x, kind: str) -> str:
    losses = net.losses(x)
    losses[1] = losses[1] * float("nan")
    try:
        if kind == "weighting":
            m(losses)
        else:
            awloss.backward(losses, net.trunk.parameters(), m)
        m.verify()
    except ValueError as e:
        return "" if "must be finite" in str(e) or "NaN" in str(e) else f"wrong error: {e}"
    finally:
        m.reset()
    return "a NaN loss was not reported"


def check_amp(device: str, steps: int, only: list[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    cuda = device.startswith("cuda")
    dtype = torch.float16 if cuda else torch.bfloat16
    x = torch.randn(32, 16, device=device)
    for kind in ("weighting", "aggregator"):
        for name in _methods(kind, only):
            torch.manual_seed(0)
            net = Net(T_DEFAULT).to(device)
            scaler = torch.amp.GradScaler(device.split(":")[0], enabled=cuda)
            note = ""
            try:
                if kind == "weighting":
                    m = make_weighting(name, net, device)
                    opt = torch.optim.Adam([{"params": net.parameters()}, *m.param_groups(lr=0.01)], lr=1e-3)
                    for _ in range(steps):
                        weighting_step(m, net, opt, x, scaler=scaler, autocast_dtype=dtype)
                else:
                    m = awloss.get_class(name)._make_example(T_DEFAULT).to(device)
                    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
                    for _ in range(steps):
                        aggregator_step(m, net, opt, x, scaler=scaler, autocast_dtype=dtype)
                m.verify()
                if getattr(m, "weighted", True) and not bool(torch.isfinite(m.weights).all()):
                    note = f"non-finite weights {m.weights.tolist()}"
            except Exception as e:  # noqa: BLE001
                note = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            rows.append({"check": f"autocast {dtype} + GradScaler", "kind": kind, "method": name, "ok": note == "", "note": note})
    return rows


def check_compile(device: str, steps: int) -> list[dict[str, Any]]:
    rows = []
    cuda = device.startswith("cuda")
    for name in ("uw", "awl", "sum"):
        torch.manual_seed(0)
        net = Net(T_DEFAULT).to(device)
        w = make_weighting(name, net, device)
        opt = torch.optim.Adam([{"params": net.parameters()}, *w.param_groups(lr=0.01)], lr=1e-3)
        x = torch.randn(32, 16, device=device)

        def loss_step(x):  # type: ignore[no-untyped-def]
            return w(net.losses(x))

        note, ms = "", float("nan")
        try:
            torch._dynamo.reset()
            compiled = torch.compile(loss_step, mode="reduce-overhead") if cuda else torch.compile(loss_step, backend="eager")
            with torch.no_grad():
                eager = loss_step(x)
            for i in range(steps + 3):
                if i == 3:
                    start = _now(cuda)
                opt.zero_grad(set_to_none=True)
                total = compiled(x)
                total.backward()
                opt.step()
            ms = 1e3 * (_now(cuda) - start) / steps
            if not bool(torch.isfinite(total)):
                note = "non-finite objective"
            elif abs(float(eager) - float(total.detach())) > 1.0:
                note = "compiled and eager objectives diverge"
        except Exception as e:  # noqa: BLE001
            note = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        mode = "reduce-overhead" if cuda else "backend=eager (dry run)"
        rows.append({"check": f"torch.compile {mode}", "kind": "weighting", "method": name, "ok": note == "",
                     "note": note or f"{ms:.3f} ms/step"})
    return rows


def check_distributed(device: str) -> list[dict[str, Any]]:
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    note = ""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        try:
            net = Net(T_DEFAULT).to(device)
            x = torch.randn(32, 16, device=device)
            w = make_weighting("uw", net, device)
            w.sync = True
            opt = torch.optim.Adam([{"params": net.parameters()}, *w.param_groups(lr=0.01)], lr=1e-3)
            for _ in range(3):
                weighting_step(w, net, opt, x)
            agg = awloss.get("upgrad").to(device)
            for _ in range(3):
                aggregator_step(agg, net, opt, x)
            flag = torch.ones((), device=device)
            dist.all_reduce(flag)
            w.verify()
            agg.verify()
            if float(flag) != 1.0:
                note = f"all_reduce gave {float(flag)}"
        finally:
            dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001
        note = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return [{"check": f"{backend}, one process", "kind": "both", "method": "uw, upgrad", "ok": note == "", "note": note}]


def _now(cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


def _workload(name: str, num_tasks: int, device: str, dry: bool):
    torch.manual_seed(0)
    if name == "conv":
        c = 8 if dry else 64
        trunk = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        x = torch.randn(4 if dry else 128, 3, 16 if dry else 64, 16 if dry else 64)
        width = c
    else:
        d = 16 if dry else 256
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True)
        trunk = nn.Sequential(nn.TransformerEncoder(layer, 1 if dry else 4, enable_nested_tensor=False), nn.Flatten(1))
        x = torch.randn(4 if dry else 64, 8 if dry else 64, d)
        width = d * x.shape[1]
    heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(num_tasks))
    trunk, heads, x = trunk.to(device), heads.to(device), x.to(device)
    y = torch.randn(x.shape[0], num_tasks, device=device)

    def losses():  # type: ignore[no-untyped-def]
        h = trunk(x)
        return [(head(h).squeeze(1) - y[:, i]).pow(2).mean() for i, head in enumerate(heads)]

    return trunk, heads, losses


def check_timing(device: str, steps: int, dry: bool) -> list[dict[str, Any]]:
    rows = []
    cuda = device.startswith("cuda")
    for workload in ("conv", "transformer"):
        for T in (2, 3) if dry else (2, 10, 32):
            res: dict[str, Any] = {}
            for method in ("loop", "batched"):
                trunk, heads, losses = _workload(workload, T, device, dry)
                agg = awloss.get("upgrad").to(device)
                opt = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=1e-3)
                try:
                    for _ in range(1 if dry else 2):
                        opt.zero_grad(set_to_none=True)
                        awloss.backward(losses(), trunk.parameters(), agg, method=method)
                        opt.step()
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    times = []
                    for _ in range(steps):
                        start = _now(cuda)
                        opt.zero_grad(set_to_none=True)
                        awloss.backward(losses(), trunk.parameters(), agg, method=method)
                        opt.step()
                        times.append(_now(cuda) - start)
                    agg.verify()
                    res[method] = 1e3 * statistics.median(times)
                    res[method + "_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
                except Exception as e:  # noqa: BLE001
                    res[method + "_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            ok = "loop" in res and "batched" in res
            note = (
                f"loop {res['loop']:.2f} ms, batched {res['batched']:.2f} ms ({res['loop'] / res['batched']:.2f}x); "
                f"peak memory loop {res['loop_peak_mib']:.0f} MiB, batched {res['batched_peak_mib']:.0f} MiB"
                if ok else "; ".join(str(v) for k, v in res.items() if k.endswith("_error"))
            )
            rows.append({"check": "loop vs batched (UPGrad)", "kind": workload, "method": f"T={T}", "ok": ok,
                         "note": note, **res})
    return rows


GRAMIAN_VARIANTS = ("floor", "loop", "gram_loop", "gram_batched")


@contextlib.contextmanager
def _batched_passes(flag: bool) -> Iterator[None]:
    """Force the gramian engine's per-task passes to be batched (``True``) or a loop (``False``): the engine
    asks ``awloss._backward._engine.auto_batches(device)``, replaced here for the duration."""
    saved = _engine.auto_batches
    _engine.auto_batches = lambda device: flag
    try:
        yield
    finally:
        _engine.auto_batches = saved


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """Full fp32 matmuls and convolutions (CUDA's cuDNN default is TF32), for the step whose weights are compared."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _count_passes(trunk: nn.Module, counter: list[int]):  # type: ignore[no-untyped-def]
    """A hook on the trunk's output: one call per backward pass through it (one for a vmap-ed pass of T tasks)."""

    def hook(module, args, out):  # type: ignore[no-untyped-def]
        out.register_hook(lambda grad: counter.__setitem__(0, counter[0] + 1))

    return trunk.register_forward_hook(hook)


def _host_reads(step, cuda: bool) -> int:
    """The host reads of one ``step``: the CUDA sync debug mode's warnings, or on the CPU the reads counted
    by ``_HostReads`` with the checks run as on an accelerator."""
    if cuda:
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        return sum("synchroniz" in str(w.message) for w in caught)
    with _checks.strict_host_reads(), _HostReads() as reads:
        step()
    return len(reads.names)


def _gramian_variant(variant: str, workload: str, T: int, device: str, steps: int, dry: bool) -> dict[str, Any]:
    """One variant of the gramian check on a fresh workload (the same initial model for every variant)."""
    cuda = device.startswith("cuda")
    trunk, heads, losses = _workload(workload, T, device, dry)
    agg = awloss.get("upgrad").to(device)
    opt = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=1e-3)
    shared = list(trunk.parameters())
    own = [list(h.parameters()) for h in heads]
    method = {"loop": "loop", "gram_loop": "gramian", "gram_batched": "gramian"}.get(variant)

    def step():  # type: ignore[no-untyped-def]
        opt.zero_grad(set_to_none=True)
        items = losses()
        w = None
        if method is None:  # the floor: T backwards, nothing aggregated nor written
            for t, loss in enumerate(items):
                torch.autograd.grad(loss, [*shared, *own[t]], retain_graph=t < T - 1)
        else:
            w = awloss.backward(items, trunk.parameters(), agg, method=method)
        opt.step()
        return w

    force = _batched_passes(variant == "gram_batched") if variant.startswith("gram_") else contextlib.nullcontext()
    res: dict[str, Any] = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with force:
        with _no_tf32():
            w = step()  # the compared step
        res["weights"] = None if w is None else w.tolist()
        for _ in range(0 if dry else 1):  # warm-up (the compared step was the first)
            step()
        times = []
        for _ in range(steps):
            start = _now(cuda)
            step()
            times.append(_now(cuda) - start)
        res["ms"] = 1e3 * statistics.median(times)
        res["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
        counter = [0]
        handle = _count_passes(trunk, counter)
        try:
            res["host_reads"] = _host_reads(step, cuda)
        finally:
            handle.remove()
        res["passes"] = counter[0]
    agg.verify()
    return res


def check_gramian(device: str, steps: int, dry: bool) -> list[dict[str, Any]]:
    rows = []
    for workload in ("conv", "transformer"):
        for T in (3,) if dry else (10, 32):
            res: dict[str, Any] = {}
            for variant in GRAMIAN_VARIANTS:
                try:
                    res[variant] = _gramian_variant(variant, workload, T, device, steps, dry)
                except Exception as e:  # noqa: BLE001 - reported in the row
                    res[variant + "_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            errors = [f"{k[:-6]}: {v}" for k, v in res.items() if k.endswith("_error")]
            agree = False
            if not errors:
                wl, wb, wo = (torch.tensor(res[v]["weights"]) for v in ("gram_loop", "gram_batched", "loop"))
                agree = bool(torch.allclose(wb, wl, rtol=1e-4, atol=1e-6))
                res["weights_max_diff"] = float((wb - wl).abs().max())
                res["weights_max_diff_vs_loop"] = float((wb - wo).abs().max())
                ms = {v: res[v]["ms"] for v in GRAMIAN_VARIANTS}
                res["gram_batched_over_floor"] = ms["gram_batched"] / ms["floor"]
                res["gram_batched_over_loop"] = ms["gram_batched"] / ms["loop"]
                note = (
                    "ms " + ", ".join(f"{v} {ms[v]:.2f}" for v in GRAMIAN_VARIANTS)
                    + f"; gram_batched/floor {res['gram_batched_over_floor']:.2f}x, "
                    f"/loop {res['gram_batched_over_loop']:.2f}x; peak MiB "
                    + ", ".join(f"{res[v]['peak_mib']:.0f}" for v in GRAMIAN_VARIANTS)
                    + "; passes " + "/".join(str(res[v]["passes"]) for v in GRAMIAN_VARIANTS)
                    + ", host reads " + "/".join(str(res[v]["host_reads"]) for v in GRAMIAN_VARIANTS)
                    + f"; |Δw| gram {res['weights_max_diff']:.1e}, vs loop {res['weights_max_diff_vs_loop']:.1e}"
                    + ("" if agree else " (the gramian variants' weights differ)")
                    + (" (gram_batched's passes were not batched)"
                       if res["gram_batched"]["passes"] >= res["gram_loop"]["passes"] else "")
                )
            else:
                note = "; ".join(errors)
            rows.append({"check": "gramian engine (UPGrad)", "kind": workload, "method": f"T={T}",
                         "ok": not errors and agree, "note": note, **res})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the CPU at toy sizes (tests the script)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    parser.add_argument("--out", default=str(HERE / "results" / "gpu_check"), help="path without extension")
    parser.add_argument("--methods", nargs="+", default=None, help="registry names (default: every method)")
    parser.add_argument("--only", nargs="+", default=None,
                        choices=["methods", "amp", "compile", "distributed", "timing", "gramian"],
                        help="a subset of the checks")
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("No CUDA device: run with --dry-run to test the script on the CPU.", file=sys.stderr)
        return 2
    steps = 2 if args.dry_run else 5
    begin = time.perf_counter()
    checks = {
        "methods": lambda: check_methods(device, steps, args.methods),
        "amp": lambda: check_amp(device, steps, args.methods),
        "compile": lambda: check_compile(device, steps if args.dry_run else 20),
        "distributed": lambda: check_distributed(device),
        "timing": lambda: check_timing(device, 1 if args.dry_run else 10, args.dry_run),
        "gramian": lambda: check_gramian(device, 1 if args.dry_run else 10, args.dry_run),
    }
    rows: list[dict[str, Any]] = []
    for key, run in checks.items():
        if args.only and key not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            rows += run()
        except Exception:  # noqa: BLE001 - one broken check must not hide the others
            rows.append({"check": key, "kind": "", "method": "", "ok": False, "note": traceback.format_exc(limit=2)})
        print(f"[{key}] {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    elapsed = time.perf_counter() - begin
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    head = (f"awloss {awloss.__version__}, torch {torch.__version__}, {device} ({name}), "
            f"{'dry run, ' if args.dry_run else ''}{elapsed:.0f} s")
    failed = [r for r in rows if not r["ok"]]
    lines = [head, f"{len(rows) - len(failed)}/{len(rows)} checks passed", ""]
    lines += [f"{'PASS' if r['ok'] else 'FAIL'}  {r['check']:<32} {r['kind']:<11} {r['method']:<14} {r['note']}"
              for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    if args.dry_run and args.out == parser.get_default("out"):
        out = out.with_name(out.name + "_dry_run")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"header": head, "rows": rows}, indent=1, default=str))
    return 0 if not failed else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
