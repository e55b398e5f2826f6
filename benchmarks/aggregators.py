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

``--workloads mlp cnn transformer`` compares the engines instead (Gramian aggregators), per workload:
``sum``, ``floor``, ``ours`` (the loop engine), ``ours_gram`` (``method="gramian"``: no Jacobian),
``torchjd`` (autojac) and ``torchjd_gram`` (TorchJD's autogram ``Engine`` on the trunk: its Gramian, the
weighting, ``losses.backward(w)``; its modules hooked before the forward, on a copy of the model).
``--flops`` counts instead of timing (noise-free): ``torch.utils.flop_counter.FlopCounterMode`` over one step of each
of those variants, per workload, with the analytical ``bound`` column (see :func:`gramian_bound`): the cheaper of the
two known exact ways of forming the Gramian, relative to the floor. FlopCounterMode counts only matrix products,
convolutions and attention kernels (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``convolution[_backward]``, the CUDA
``sdpa`` kernels); :data:`EXTRA_FLOPS` adds ``mv``, ``dot``, ``addmv`` and the CPU flash-attention kernels. Elementwise
ops, reductions, norms, softmax, the embedding's scatter and the aggregators' small ``T x T`` solves outside those
kernels are not counted.
``--memory`` measures the peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of one
step per variant, each in its own process, on a 10.5M-parameter MLP trunk at T = 32 (``--memory-tasks``).

    python benchmarks/aggregators.py [--tasks 2 10 32] [--methods upgrad mgda] [--rounds 5] [--steps 10]
    python benchmarks/aggregators.py --workloads mlp cnn transformer --tasks 10 --methods upgrad mgda
    python benchmarks/aggregators.py --flops --workloads mlp cnn transformer wide big --tasks 10 --methods upgrad
    python benchmarks/aggregators.py --memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
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
    return _step(trunk, heads, torch.randn(batch, 64), T)


def _step(trunk: nn.Module, heads: nn.ModuleList, x: torch.Tensor, T: int):
    """``(trunk, heads, forward)``: ``forward()`` clears the gradients and returns the features and T MSE losses."""
    y = torch.randn(T, x.shape[0], 1)
    params = [*trunk.parameters(), *heads.parameters()]

    def forward():
        for p in params:
            p.grad = None
        f = trunk(x)
        return f, [((h(f) - y[t]) ** 2).mean() for t, h in enumerate(heads)]

    return trunk, heads, forward


class Tokens(nn.Module):
    """The transformer workloads' trunk: embedding -> 2-layer TransformerEncoder (``heads`` heads, feed-forward
    ``2d``) -> mean over the sequence."""

    def __init__(self, vocab: int = 1000, d: int = 128, heads: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x):
        return self.enc(self.emb(x)).mean(1)


WORKLOADS = ("mlp", "cnn", "transformer", "wide", "big")


def workload(kind: str, T: int, seed: int = 0):
    """``mlp`` (64-256-256, batch 64), ``cnn`` (3 conv-BN-ReLU blocks, 32x32x3 images, batch 32), ``transformer``
    (d = 128, 4 heads, 2 layers, 16 sequences of 32 tokens: N = 512 tokens > width 128), ``wide`` (the same trunk
    at d = 512, 8 heads, 2 layers, 4 sequences of 16 tokens: N = 64 tokens < width 512, the small-batch/wide
    regime) or ``big`` (MLP 1024-2048-2048-2048, 10.5M parameters, batch 64)."""
    torch.manual_seed(seed)
    if kind == "mlp":
        return build(T, 256, 64, seed)
    if kind == "cnn":
        trunk = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        x, width = torch.randn(32, 3, 32, 32), 64
    elif kind == "transformer":
        trunk, x, width = Tokens(), torch.randint(0, 1000, (16, 32)), 128
    elif kind == "wide":
        trunk, x, width = Tokens(d=512, heads=8), torch.randint(0, 1000, (4, 16)), 512
    elif kind == "big":
        layers = [nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU()]
        trunk, x, width = nn.Sequential(*layers), torch.randn(64, 1024), 2048
    else:
        raise ValueError(f"Argument `kind` must be one of {WORKLOADS}, got {kind!r}.")
    return _step(trunk, nn.ModuleList([nn.Linear(width, 1) for _ in range(T)]), x, T)


def engine_cases(name: str, T: int, kind: str, tja, only: str | None = None) -> dict:
    """The engines side by side on one workload (``only``: build just that variant, for ``--memory``)."""
    out = {}

    def want(k: str) -> bool:
        return only is None or only == k

    trunk, heads, forward = workload(kind, T)
    shared = list(trunk.parameters())
    per_task = [shared + list(h.parameters()) for h in heads]
    agg = {k: awloss.get_class(name)._make_example(T) for k in ("ours", "ours_gram", "ours_auto")}
    if want("sum"):
        out["sum"] = lambda: torch.stack(forward()[1]).sum().backward()
    if want("floor"):
        def floor_step():
            _, losses = forward()
            for t in range(T):
                torch.autograd.grad(losses[t], per_task[t], retain_graph=t < T - 1)
        out["floor"] = floor_step
    if want("ours"):
        out["ours"] = lambda: awloss.backward(forward()[1], shared, agg["ours"], method="loop")
    if want("ours_gram"):
        out["ours_gram"] = lambda: awloss.backward(forward()[1], shared, agg["ours_gram"], method="gramian")
    if want("ours_auto") and only is None:  # what method="auto" picks (the loop, or the gramian engine where it pays)
        out["ours_auto"] = lambda: awloss.backward(forward()[1], shared, agg["ours_auto"])
    ref = TORCHJD[name](T, tja) if tja is not None and name in TORCHJD else None
    if ref is not None and want("torchjd"):
        from torchjd.autojac import jac_to_grad, mtl_backward

        def torchjd_step():
            f, losses = forward()
            mtl_backward(losses, features=f)
            jac_to_grad(shared, ref)
        out["torchjd"] = torchjd_step
    weighting = getattr(ref, "gramian_weighting", None)
    if weighting is not None and want("torchjd_gram"):
        try:
            from torchjd.autogram import Engine
        except ImportError:  # torchjd without autogram
            return out
        trunk2, _, forward2 = workload(kind, T)  # hooked by autogram: its own copy of the model
        engine = Engine(trunk2, batch_dim=None)

        def autogram_step():
            L = torch.stack(forward2()[1])
            L.backward(weighting(engine.compute_gramian(L)))
        out["torchjd_gram"] = autogram_step
    return out


def engines_main(args, tja) -> list[dict]:
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    names = args.methods or ["upgrad", "mgda"]
    print(f"torch {torch.__version__}, {args.threads} thread(s), medians of {args.rounds} rounds x {args.steps} steps, "
          f"{args.clock} clock, load average {os.getloadavg()[0]:.1f} at start")
    cols = ["sum", "floor", "ours", "ours_gram", "ours_auto", "torchjd", "torchjd_gram"]
    print(f"{'workload':<12}{'method':<8}{'T':>3}" + "".join(f"{c + ' ms':>16}" for c in cols)
          + f"{'gram/floor':>11}{'auto/floor':>11}{'jd/gram':>9}{'jdgram/gram':>12}{'load':>6}")
    rows = []
    for kind in args.workloads:
        for T in args.tasks:
            for name in names:
                fns = engine_cases(name, T, kind, tja)
                for k in list(fns):
                    try:
                        fns[k]()  # warm-up
                    except Exception as e:  # noqa: BLE001 - a variant that cannot run this model: its column stays "-"
                        print(f"# {kind} {name} T={T}: {k} failed: {type(e).__name__}: {str(e)[:120]}")
                        del fns[k]
                times: dict[str, list[float]] = {k: [] for k in fns}
                for _ in range(args.rounds):
                    for k, fn in fns.items():
                        times[k].append(time_case(fn, args.steps, clock))
                med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
                load = os.getloadavg()[0]
                row = {"workload": kind, "method": name, "tasks": T, "load": load}
                row.update({f"{k}_ms": v for k, v in med.items()})
                rows.append(row)

                def ratio(a: str, b: str, med: dict = med) -> str:
                    return f"{med[a] / med[b]:.2f}" if a in med and b in med else "-"

                cells = "".join(f"{med[c]:>16.2f}" if c in med else f"{'-':>16}" for c in cols)
                print(f"{kind:<12}{name:<8}{T:>3}" + cells
                      + f"{ratio('ours_gram', 'floor'):>11}{ratio('ours_auto', 'floor'):>11}{ratio('torchjd', 'ours_gram'):>9}"
                      f"{ratio('torchjd_gram', 'ours_gram'):>12}{load:>6.1f}", flush=True)
    return rows


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kw) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _mv_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]


def _addmv_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]


def _dot_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0]


# Kernels FlopCounterMode's registry lacks (torch 2.13) that these steps run: the gramian engine's matrix-vector
# products and, on CPU, the flash-attention kernel that scaled_dot_product_attention dispatches to.
EXTRA_FLOPS = {
    torch.ops.aten.mv: _mv_flop,
    torch.ops.aten.addmv: _addmv_flop,
    torch.ops.aten.dot: _dot_flop,
    torch.ops.aten.vdot: _dot_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flop,
}


def count_flops(fn) -> int:
    """The floating-point operations of one call of ``fn`` (after a first, uncounted call: the steady state)."""
    from torch.utils.flop_counter import FlopCounterMode

    fn()
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOPS) as counter:
        fn()
    return counter.get_total_flops()


def linear_layers(trunk: nn.Module, forward) -> list[tuple[str, int, int, int]]:
    """``(name, N, i, o)`` of each shared Linear-like layer of ``trunk``, read by forward hooks during one
    ``forward()``: its weight gradient is ``Δᵀ A`` with ``A[N, i]`` (the rows it saw) and ``Δ[N, o]``.

    * ``nn.Linear``: ``N`` = the rows of its input (every leading axis), ``i = in_features``, ``o = out_features``;
    * ``nn.Conv2d``, unfolded: ``N`` = batch x output positions, ``i = C_in·kh·kw/groups``, ``o = C_out``;
    * ``nn.MultiheadAttention`` (packed ``q = k = v`` projection): ``in_proj`` (``i = d``, ``o = 3d``) and
      ``out_proj`` (``i = o = d``), both over all ``N`` tokens (``out_proj`` is applied through ``F.linear``,
      so its own hook would not fire; it is counted here, once).

    A layer called twice has its rows side by side (``N`` summed). Biases, norms and embeddings are not listed.
    """
    sizes: dict[str, list[int]] = {}
    handles = []

    def hook_for(name: str, mod: nn.Module):
        def hook(m, inputs, output):
            if isinstance(m, nn.Linear):
                rows = [(name, inputs[0].numel() // m.in_features, m.in_features, m.out_features)]
            elif isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                n = output.shape[0] * output.shape[2] * output.shape[3] if output.dim() == 4 else output[0].numel()
                rows = [(name, n, m.in_channels * kh * kw // m.groups, m.out_channels)]
            else:  # nn.MultiheadAttention
                d, n = m.embed_dim, inputs[0].numel() // m.embed_dim
                rows = [(name + ".in_proj", n, d, 3 * d), (name + ".out_proj", n, d, d)]
            for key, n, i, o in rows:
                sizes.setdefault(key, [0, i, o])[0] += n
        return hook

    skip = {id(m.out_proj) for m in trunk.modules() if isinstance(m, nn.MultiheadAttention)}
    for name, mod in trunk.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d, nn.MultiheadAttention)) and id(mod) not in skip:
            handles.append(mod.register_forward_hook(hook_for(name or "trunk", mod)))
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    return [(k, n, i, o) for k, (n, i, o) in sizes.items()]


def gramian_bound(floor_flops: float, layers: list[tuple[str, int, int, int]], T: int) -> tuple[float, list[dict]]:
    """The flops of an exact Gramian engine on this workload if it takes, per Linear-like layer, the cheaper of the
    two known exact routes, and matches the floor everywhere else; and the per-layer detail.

    Per layer with rows ``A[N, i]`` and output gradients ``Δ_t[N, o]`` (flops = 2 x multiply-adds, as
    FlopCounterMode counts):

    * the floor spends ``2TNio`` on the T weight gradients ``J_t = Δ_tᵀ A``;
    * route ``J``: the same ``2TNio``, then ``2T²io`` for ``JJᵀ`` and ``2Tio`` for the update ``Σ w_t J_t``;
    * route ``identity``, ``G_st = Σ (AAᵀ) ⊙ (Δ_sΔ_tᵀ)``: ``2N²i`` for ``K = AAᵀ``, ``2TN²o`` for ``KΔ_t``,
      ``2T²No`` for the ``⟨Δ_s, KΔ_t⟩``, and the update ``(Σ w_tΔ_t)ᵀA``: ``2TNo + 2Nio``.

    Everything else (the forward, the T passes' input gradients, attention, norms, biases, embeddings, the heads)
    costs what the floor's does, so ``bound = floor - Σ 2TNio + Σ min(J, identity)``. For convolutions (unfolded
    sizes) the identity's ``N²`` never wins in these workloads. It is the cheaper of these two routes, not a
    proof that no cleverer exact scheme exists. ``floor - Σ 2TNio`` alone (the ``passes`` column) is what is left
    with the weight gradients free: no engine that back-propagates the ``T`` tasks' output gradients goes below it.
    """
    bound, rows = float(floor_flops), []
    for name, N, i, o in layers:
        floor_w = 2 * T * N * i * o
        via_j = floor_w + 2 * T * T * i * o + 2 * T * i * o
        via_id = 2 * N * N * i + 2 * T * N * N * o + 2 * T * T * N * o + 2 * T * N * o + 2 * N * i * o
        bound += min(via_j, via_id) - floor_w
        rows.append({"layer": name, "N": N, "i": i, "o": o, "floor_w": floor_w, "via_j": via_j, "via_id": via_id,
                     "route": "identity" if via_id < via_j else "J"})
    return bound, rows


def flops_main(args, tja) -> list[dict]:
    warnings.filterwarnings("ignore")  # e.g. functorch's "no batching rule" for the CPU attention backward (autojac)
    names = args.methods or ["upgrad", "mgda"]
    kinds = args.workloads or list(WORKLOADS)
    cols = ["sum", "floor", "ours", "ours_gram", "torchjd", "torchjd_gram"]
    print(f"torch {torch.__version__}, flops of one step (forward + gradients + aggregation) per variant, "
          f"FlopCounterMode (+ mv, dot, CPU flash attention); GFLOP")
    print(f"{'workload':<12}{'method':<8}{'T':>3}" + "".join(f"{c:>13}" for c in cols)
          + f"{'gram/floor':>11}{'jd/gram':>9}{'jdgram/gram':>12}{'bound':>7}{'passes':>8}")
    rows = []
    for kind in kinds:
        for T in args.tasks:
            trunk, _, forward = workload(kind, T)
            layers = linear_layers(trunk, forward)
            for name in names:
                flops: dict[str, float] = {}
                for k, fn in engine_cases(name, T, kind, tja).items():
                    try:
                        flops[k] = float(count_flops(fn))
                    except Exception as e:  # noqa: BLE001 - a variant that cannot run this model: its column stays "-"
                        print(f"# {kind} {name} T={T}: {k} failed: {type(e).__name__}: {str(e)[:120]}")
                row: dict = {"workload": kind, "method": name, "tasks": T, **{f"{k}_flops": v for k, v in flops.items()}}
                if "floor" in flops:
                    bound, detail = gramian_bound(flops["floor"], layers, T)
                    passes = (flops["floor"] - sum(r["floor_w"] for r in detail)) / flops["floor"]
                    row.update(bound_flops=bound, bound=bound / flops["floor"], passes=passes, layers=detail)
                rows.append(row)
                def ratio(a: str, b: str, flops: dict = flops) -> str:
                    return f"{flops[a] / flops[b]:.2f}" if a in flops and b in flops else "-"

                cells = "".join(f"{flops[c] / 1e9:>13.3f}" if c in flops else f"{'-':>13}" for c in cols)
                b = f"{row['bound']:>7.2f}{row['passes']:>8.2f}" if "bound" in row else f"{'-':>7}{'-':>8}"
                print(f"{kind:<12}{name:<8}{T:>3}" + cells + f"{ratio('ours_gram', 'floor'):>11}"
                      f"{ratio('torchjd', 'ours_gram'):>9}{ratio('torchjd_gram', 'ours_gram'):>12}{b}", flush=True)
            desc = ", ".join(f"{n}/{i}" for _, n, i, _ in layers)
            wins = sum(r["route"] == "identity" for r in gramian_bound(0.0, layers, T)[1])
            print(f"#   {kind} T={T}: {len(layers)} Linear-like layers, N/i = {desc}; identity cheaper on {wins}")
    return rows


def _vm(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status``, in MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _memory_child(variant: str, T: int, name: str) -> None:
    """One variant in this process: build, a first step (``ru_maxrss`` then includes one-time allocations such
    as BLAS workspaces), the peak reset (``/proc/self/clear_refs``), a second step and its own peak (``VmHWM``)."""
    import torchjd.aggregation as tja

    warnings.filterwarnings("ignore")
    fn = engine_cases(name, T, "big", tja, only=variant)[variant]
    before = _vm("VmRSS")
    fn()
    first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    after = _vm("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # the high-water mark restarts from the current RSS
        f.write("5")
    fn()
    second = _vm("VmHWM")
    print(json.dumps({"variant": variant, "before_mib": before, "first_peak_mib": first, "after_first_mib": after,
                      "second_peak_mib": second}))


def memory_main(args) -> list[dict]:
    T, name = args.memory_tasks, (args.methods or ["upgrad"])[0]
    n = sum(p.numel() for p in workload("big", 1)[0].parameters())
    print(f"resident memory of one step per variant, each in its own process; MLP 1024-2048-2048-2048 trunk "
          f"({n / 1e6:.1f}M parameters), batch 64, T = {T}, {name}; load average {os.getloadavg()[0]:.1f}")
    print("before: RSS with the model built; first: ru_maxrss over the first step (with one-time allocations);"
          " second: VmHWM of a second step after resetting the high-water mark (steady state)")
    rows = []
    for variant in ["sum", "floor", "ours", "ours_gram", "torchjd", "torchjd_gram"]:
        cmd = [sys.executable, __file__, "--memory-child", variant, "--memory-tasks", str(T), "--methods", name]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not res.stdout.strip():
            print(f"{variant:<14} failed: {res.stderr.strip().splitlines()[-1:]}")
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["variant"] == "sum"), None)
    print(f"{'variant':<14}{'before MiB':>11}{'first MiB':>11}{'second MiB':>12}{'first/sum':>11}{'second/sum':>12}"
          f"{'2nd-before/sum':>16}")
    for r in rows:
        rel = ""
        if base:
            extra = (r["second_peak_mib"] - r["before_mib"]) / max(1e-9, base["second_peak_mib"] - base["before_mib"])
            rel = (f"{r['first_peak_mib'] / base['first_peak_mib']:>11.2f}"
                   f"{r['second_peak_mib'] / base['second_peak_mib']:>12.2f}{extra:>16.2f}")
        mib = f"{r['before_mib']:>11.0f}{r['first_peak_mib']:>11.0f}{r['second_peak_mib']:>12.0f}"
        print(f"{r['variant']:<14}{mib}{rel}")
    return rows


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
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=None,
                        help="compare the engines (loop, gramian, TorchJD autojac/autogram) on these workloads")
    parser.add_argument("--flops", action="store_true",
                        help="count the flops of one step per engine variant (FlopCounterMode) on --workloads")
    parser.add_argument("--memory", action="store_true", help="peak memory per variant, one process each")
    parser.add_argument("--memory-tasks", type=int, default=32)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(args.memory_child, args.memory_tasks, (args.methods or ["upgrad"])[0])
        return []
    if args.memory:
        return memory_main(args)
    tja = None
    if not args.no_torchjd:
        try:
            import torchjd.aggregation as tja
        except ImportError:
            print("torchjd not installed (pip install 'awloss[test]'): TorchJD column skipped")
    if args.flops:
        return flops_main(args, tja)
    if args.workloads:
        return engines_main(args, tja)
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
