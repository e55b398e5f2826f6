"""``benchmarks/aggregators.py --flops``: the flop table of the engine variants, its analytical ``bound`` column,
the layer sizes it reads from forward hooks, and the ``wide`` workload."""

import importlib.util
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("awloss_bench_aggregators", ROOT / "benchmarks" / "aggregators.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tja():
    try:
        import torchjd.aggregation as tja
    except ImportError:
        return None
    return tja


def _weight_grad_flops(bench, kind: str, T: int) -> int:
    """The floor's weight-gradient flops measured: the floor minus the floor with the Linear/Conv/attention
    weights frozen (the other shared parameters still asked for, so every input gradient is still computed)."""
    trunk, heads, forward = bench.workload(kind, T)
    shared = list(trunk.parameters())

    def floor(per_task):
        def step():
            _, losses = forward()
            for t in range(T):
                torch.autograd.grad(losses[t], per_task[t], retain_graph=t < T - 1)
        return step

    full = bench.count_flops(floor([shared + list(h.parameters()) for h in heads]))
    weights = set()
    for m in trunk.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            weights.add(id(m.weight))
        if isinstance(m, nn.MultiheadAttention):
            weights |= {id(m.in_proj_weight), id(m.out_proj.weight)}
    for p in shared:
        if id(p) in weights:
            p.requires_grad_(False)
    rest = [p for p in shared if id(p) not in weights]
    return full - bench.count_flops(floor([rest + list(h.parameters()) for h in heads]))


def test_flops_table_on_the_mlp(bench, capsys):
    T = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (row,) = bench.main(["--flops", "--workloads", "mlp", "--tasks", str(T), "--methods", "upgrad"])
    out = capsys.readouterr().out
    assert "bound" in out and any(line.startswith("mlp ") for line in out.splitlines()), out
    variants = {"sum", "floor", "ours", "ours_gram"} | ({"torchjd", "torchjd_gram"} if _tja() else set())
    assert variants <= {k[: -len("_flops")] for k in row if k.endswith("_flops")}, row
    f = {k: row[f"{k}_flops"] for k in variants}
    assert all(v > 0 for v in f.values()), f
    # the floor is one forward + T backward passes; the summed step one forward + one backward
    _, _, forward = bench.workload("mlp", T)
    fwd = bench.count_flops(forward)
    assert math.isclose(f["floor"] - fwd, T * (f["sum"] - fwd), rel_tol=0.1), (f, fwd)
    # the analytical bound, by hand: layer 1 (N = 64, i = 64, o = 256) takes J (+2T²io + 2Tio over the floor's
    # 2TNio), layer 2 (N = 64 < i = 256) the identity (2N²i + 2TN²o + 2T²No + 2TNo + 2Nio instead of 2TNio)
    assert [r["route"] for r in row["layers"]] == ["J", "identity"]
    layer1 = 2 * T * T * 64 * 256 + 2 * T * 64 * 256
    layer2 = (2 * 64 * 64 * 256 + 2 * T * 64 * 64 * 256 + 2 * T * T * 64 * 256 + 2 * T * 64 * 256
              + 2 * 64 * 256 * 256 - 2 * T * 64 * 256 * 256)  # fmt: skip
    assert row["bound_flops"] == f["floor"] + layer1 + layer2
    assert 0 < row["passes"] < row["bound"] < 1
    # the hooks' sizes give exactly the weight-gradient flops that autograd spends in the floor
    assert _weight_grad_flops(bench, "mlp", T) == sum(r["floor_w"] for r in row["layers"])


def test_gramian_engine_below_the_floor_on_big(bench):
    T = 3
    fns = {k: bench.engine_cases("upgrad", T, "big", None, only=k)[k] for k in ("floor", "ours_gram")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = {k: bench.count_flops(fn) for k, fn in fns.items()}
    assert f["ours_gram"] < 0.8 * f["floor"], f
    trunk, _, forward = bench.workload("big", T)
    bound, rows = bench.gramian_bound(f["floor"], bench.linear_layers(trunk, forward), T)
    assert [r["route"] for r in rows] == ["identity"] * 3 and bound < f["floor"]


def test_layer_sizes_and_routes_per_workload(bench):
    T = 10
    sizes = {}
    for kind in bench.WORKLOADS:
        trunk, _, forward = bench.workload(kind, T)
        sizes[kind] = bench.linear_layers(trunk, forward)
    # convolutions unfolded: N = batch x output positions, i = C_in·kh·kw
    assert sizes["cnn"] == [("0", 32 * 32 * 32, 27, 32), ("3", 32 * 15 * 15, 288, 64), ("6", 32 * 7 * 7, 576, 64)]
    att = [r for r in sizes["transformer"] if "self_attn" in r[0]]
    assert att[:2] == [("enc.layers.0.self_attn.in_proj", 512, 128, 384), ("enc.layers.0.self_attn.out_proj", 512, 128, 128)]
    assert len(sizes["transformer"]) == len(sizes["wide"]) == 8  # 2 layers x (in_proj, out_proj, linear1, linear2)
    assert {n for _, n, _, _ in sizes["wide"]} == {64} and min(i for _, _, i, _ in sizes["wide"]) == 512
    routes = {k: {r["route"] for r in bench.gramian_bound(0.0, v, T)[1]} for k, v in sizes.items()}
    assert routes["cnn"] == routes["transformer"] == {"J"}  # N > i: no exact engine below the floor's weight grads
    assert routes["wide"] == routes["big"] == {"identity"}
    with pytest.raises(ValueError, match="Argument `kind` must be one of"):
        bench.workload("nope", 2)


def test_wide_workload_runs_every_variant(bench):
    T = 2
    tja = _tja()
    fns = bench.engine_cases("upgrad", T, "wide", tja)
    assert {"sum", "floor", "ours", "ours_gram"} <= set(fns)
    if tja is not None:
        assert {"torchjd", "torchjd_gram"} <= set(fns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in fns.values():
            fn()
    # the MultiheadAttention projections are read right: hooks == autograd's weight-gradient flops
    trunk, _, forward = bench.workload("wide", T)
    layers = bench.linear_layers(trunk, forward)
    assert _weight_grad_flops(bench, "wide", T) == sum(2 * T * n * i * o for _, n, i, o in layers)
