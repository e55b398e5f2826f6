"""What ``awloss.backward`` guarantees for every registered aggregator (a new one joins automatically)."""

from __future__ import annotations

import contextlib
import copy
import io
import pickle
import re

import pytest
import torch
from torch import nn

import awloss
from awloss._checks import strict_host_reads
from awloss.aggregation import Aggregator, GramianAggregator

AGGREGATORS = awloss.available("aggregator")
T = 3


def make(name: str, num_tasks: int = T) -> Aggregator:
    return awloss.get_class(name)._make_example(num_tasks)


def make_one_absent(name: str) -> Aggregator:
    """With one task absent the method solves the T - 1 task problem: its example is made for T - 1 tasks
    (trimmed_mean's, for 3, needs 3 rows); fixed-weight methods (``zero_rows = "kept"``) keep T weights."""
    kept = getattr(awloss.get_class(name), "zero_rows", "left_out") == "kept"
    return make(name, T if kept else T - 1)


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(4, 5), nn.Tanh()).to(dtype)
    heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(T)).to(dtype)
    xs = [torch.randn(8, 4, dtype=dtype) for _ in range(3)]
    return trunk, heads, xs


def _step(agg, trunk, heads, x, **kw):
    """One ``awloss.backward`` call from zero ``.grad``; returns the trunk's ``.grad`` and the weights."""
    trunk.zero_grad()
    heads.zero_grad()
    f = trunk(x)
    losses = [(h(f).squeeze(-1) - i).pow(2).mean() for i, h in enumerate(heads)]
    torch.manual_seed(7)  # the random methods draw the same numbers in both runs
    w = awloss.backward(losses, trunk.parameters(), agg, **kw)
    return torch.cat([p.grad.reshape(-1) for p in trunk.parameters()]).clone(), w


def _copy(agg, how):
    if how == "pickle":
        return pickle.loads(pickle.dumps(agg))
    if how == "deepcopy":
        return copy.deepcopy(agg)
    buf = io.BytesIO()
    torch.save(agg, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "torch.save"])
@pytest.mark.parametrize("calls_before", [0, 1])
@pytest.mark.parametrize("name", AGGREGATORS)
def test_a_copy_taken_before_or_after_a_call_continues_like_the_original(name, calls_before, how):
    """Issue 11 §3: the Jacobian buffers cached by ``backward`` once travelled with the aggregator; the copy's
    buffer lost its aliasing with the cached views and every later update of the copy was exactly 0."""
    trunk, heads, xs = _model()
    agg = make(name)
    for x in xs[:calls_before]:
        _step(agg, trunk, heads, x)
    twin = _copy(agg, how)
    for x in xs:
        g_ref, w_ref = _step(agg, trunk, heads, x)
        g, w = _step(twin, trunk, heads, x)
        assert g.abs().sum() > 0, f"{name}: the copy's update is 0"
        torch.testing.assert_close(g, g_ref, rtol=0, atol=0)
        if w_ref is not None:
            torch.testing.assert_close(w, w_ref, rtol=0, atol=0)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_pickled_state_holds_no_jacobian_buffer(name):
    trunk, heads, xs = _model()
    agg = make(name)
    _step(agg, trunk, heads, xs[0])
    assert not any(isinstance(v, dict) and any(isinstance(k, tuple) for k in v) for v in vars(agg).values())
    n_params = sum(p.numel() for p in trunk.parameters())
    big = [v for v in vars(pickle.loads(pickle.dumps(agg))).values() if isinstance(v, torch.Tensor)]
    assert all(v.numel() < T * n_params for v in big)


def _jacobian(losses, params):
    rows = []
    for L in losses:
        if L is None:
            rows.append(torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype))
            continue
        gs = torch.autograd.grad(L, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, gs)]))
    return torch.stack(rows)


@pytest.mark.parametrize("method", ["loop", "batched", "representation"])
@pytest.mark.parametrize("name", AGGREGATORS)
def test_an_absent_task_reaches_the_aggregator_as_a_zero_row(name, method):
    """``None`` (task absent from the batch) is a zero row of the Jacobian; its head gets no gradient."""
    trunk, heads, xs = _model()
    f = trunk(xs[0])
    losses = [(h(f).squeeze(-1) - i).pow(2).mean() for i, h in enumerate(heads)]
    losses[1] = None
    agg, ref = make_one_absent(name), make_one_absent(name)
    shared = list(trunk.parameters())
    rep = method == "representation"
    if rep and agg.state_per_column:
        with pytest.raises(ValueError, match="representation="):
            awloss.backward(losses, shared, agg, representation=f)
        return
    present = iter(make_one_absent(name).transform_items([L for L in losses if L is not None]))  # DB-MTL: log-losses
    rows = [None if L is None else next(present) for L in losses]
    J = _jacobian(rows, [f] if rep else shared)
    torch.manual_seed(7)
    expected = ref(J)
    if rep:
        expected = torch.autograd.grad(f, shared, expected.view(f.shape), retain_graph=True)
        expected = torch.cat([g.reshape(-1) for g in expected])
    head0 = torch.autograd.grad(sum(r for r in rows if r is not None), heads[0].weight, retain_graph=True)[0]
    torch.manual_seed(7)
    kw = {"representation": f} if rep else {"method": method}
    w = awloss.backward({"a": losses[0], "b": None, "c": losses[2]}, shared, agg, **kw)
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    torch.testing.assert_close(got, expected)
    if ref.weighted:
        torch.testing.assert_close(w, ref.weights)
    assert heads[1].weight.grad is None and heads[0].weight.grad is not None
    torch.testing.assert_close(heads[0].weight.grad, head0)


# ---------------------------------------------------------------- the engine contract
def _engines():
    from awloss._backward._batched import BatchedEngine
    from awloss._backward._gram import GramianEngine
    from awloss._backward._loop import GradLoopEngine, LoopEngine
    from awloss._backward._summed import SummedEngine

    return {
        "loop": lambda shared, heads: LoopEngine(shared, {}),
        "grad_loop": lambda shared, heads: GradLoopEngine(shared, heads, {}),
        "batched": lambda shared, heads: BatchedEngine(shared, heads, {}),
        "summed": lambda shared, heads: SummedEngine(shared, {}),
        "gramian": lambda shared, heads: GramianEngine(shared, heads),
    }


def _run_engine(engine, losses, agg):
    """The pipeline of ``awloss.backward`` with a given engine (no DDP here: the reduction is the identity)."""
    from awloss._backward._aggregate import aggregate
    from awloss._backward._gather import gather_losses
    from awloss._backward._reduce import reduce_jacobian

    task = gather_losses(losses, agg, None)
    jac = reduce_jacobian(engine.jacobian(task, False), len(task.items))
    updates, overflow = aggregate(agg, jac, len(task.items), task.scale)
    engine.write(jac, updates, False)
    return None if overflow else agg._weights


ENGINE_CASES = [
    (name, engine)
    for name in AGGREGATORS
    for engine in ("loop", "grad_loop", "batched", "summed", "gramian")
    if engine != "summed" or getattr(awloss.get_class(name), "_uniform", False)  # constant-weight methods only
    if engine != "gramian" or issubclass(awloss.get_class(name), GramianAggregator)  # needs only G = JJᵀ
]


@pytest.mark.parametrize(("name", "engine"), ENGINE_CASES)
def test_every_engine_gives_the_same_weights_and_grad(name, engine):
    """Same inputs, same ``.grad`` (shared and heads) and weights as the aggregator on the manual Jacobian;
    one task absent and one shared parameter unused (its ``.grad`` stays ``None``)."""
    trunk, heads, xs = _model()
    unused = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    shared = [*trunk.parameters(), unused]
    head_params = list(heads.parameters())
    f = trunk(xs[0])
    losses = [(h(f).squeeze(-1) - i).pow(2).mean() for i, h in enumerate(heads)]
    losses[2] = None
    agg, ref = make_one_absent(name), make_one_absent(name)
    present = iter(make_one_absent(name).transform_items([L for L in losses if L is not None]))  # DB-MTL: log-losses
    rows = [None if L is None else next(present) for L in losses]
    J = _jacobian(rows, shared[:-1])
    head_ref = torch.autograd.grad(
        sum(r for r in rows if r is not None), head_params, retain_graph=True, allow_unused=True
    )
    torch.manual_seed(7)
    expected = ref(J)
    torch.manual_seed(7)
    w = _run_engine(_engines()[engine](shared, head_params), losses, agg)
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in shared[:-1]]), expected)
    assert unused.grad is None
    for p, g in zip(head_params, head_ref):  # the absent task's head: no gradient (None or, loop engines, 0)
        if g is None:
            assert p.grad is None or not p.grad.any()
        else:
            torch.testing.assert_close(p.grad, g)
    if ref.weighted:
        torch.testing.assert_close(w, ref.weights)


@pytest.mark.parametrize("batched", [False, True])
def test_the_representation_engine_batched_or_not_gives_the_same_result(batched):
    from awloss._backward._graph import walk
    from awloss._backward._representation import RepresentationEngine

    trunk, heads, xs = _model()
    shared = list(trunk.parameters())
    f = trunk(xs[0])
    losses = [(h(f).squeeze(-1) - i).pow(2).mean() for i, h in enumerate(heads)]
    Jz = torch.stack([torch.autograd.grad(L, f, retain_graph=True)[0] for L in losses])
    ref = awloss.get("upgrad")
    expected = torch.autograd.grad(f, shared, ref(Jz), retain_graph=True)
    above = walk(losses, f.grad_fn, {id(p) for p in shared} | {id(f)})
    engine = RepresentationEngine(shared, f, above, batched, {})
    w = _run_engine(engine, losses, awloss.get("upgrad"))
    torch.testing.assert_close(w, ref.weights)
    for p, g in zip(shared, expected):
        torch.testing.assert_close(p.grad, g)
    assert all(p.grad is not None for p in heads.parameters())


def test_the_engine_chosen_for_each_case(monkeypatch):
    from awloss._backward import _choose, _engine
    from awloss._backward._gather import gather_losses

    trunk, heads, xs = _model()
    shared = list(trunk.parameters())

    def chosen(name="upgrad", representation=False, task_params=None, method="auto", distributed=False):
        monkeypatch.setattr(_choose, "is_distributed", lambda: distributed)
        f = trunk(xs[0])
        losses = [h(f).pow(2).mean() for h in heads]
        agg = awloss.get(name)
        task = gather_losses(losses, agg, None)
        rep = f if representation else None
        return _choose.choose_engine(task, shared, agg, rep, task_params, method).name

    assert chosen() == "loop" and chosen(method="batched") == "batched"
    assert chosen("grad_sum") == "summed" and chosen("grad_mean", method="batched") == "summed"
    assert chosen(task_params=heads.parameters()) == "grad_loop" and chosen(distributed=True) == "grad_loop"
    assert chosen("grad_sum", distributed=True) == "grad_loop"
    assert chosen(representation=True) == "representation"
    assert chosen(method="gramian") == "gramian" and chosen("grad_sum", method="gramian") == "summed"
    assert chosen(task_params=heads.parameters(), method="gramian") == "gramian"
    monkeypatch.setattr(_engine, "auto_batches", lambda device: True)  # as on an accelerator
    assert chosen() == "batched" and chosen(method="loop") == "loop"


GRAMIAN_AGGREGATORS = [n for n in AGGREGATORS if issubclass(awloss.get_class(n), GramianAggregator)]


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("name", GRAMIAN_AGGREGATORS)
def test_a_copy_taken_after_a_gramian_call_continues_like_the_original(name, how):
    """The gramian engine's state lives in the aggregator alone: a copy continues bit for bit, in float32."""
    trunk, heads, xs = _model(torch.float32)
    agg = make(name)
    _step(agg, trunk, heads, xs[0], method="gramian")
    twin = _copy(agg, how)
    for x in xs[1:]:
        g_ref, w_ref = _step(agg, trunk, heads, x, method="gramian")
        g, w = _step(twin, trunk, heads, x, method="gramian")
        assert g.abs().sum() > 0, f"{name}: the copy's update is 0"
        torch.testing.assert_close(g, g_ref, rtol=0, atol=0)
        torch.testing.assert_close(w, w_ref, rtol=0, atol=0)


def test_gramian_under_ddp_raises_naming_what_works(monkeypatch):
    from awloss._backward import _choose

    monkeypatch.setattr(_choose, "is_distributed", lambda: True)
    trunk, heads, xs = _model()
    with pytest.raises(NotImplementedError, match="method='loop'"):
        _step(make("upgrad"), trunk, heads, xs[0], method="gramian")


# ---------------------------------------------------------------- gradient scales float32 holds but its squares do not
SCALES = {  # per task: its loss times this (float32 gradients stay normal; their squares leave float32's range)
    "tiny": (1e-25, 1e-25, 1e-25),  # every G_tt underflows to 0 in float32: all tasks "absent", a zero update
    "huge": (1e20, 1e20, 1e20),  # G overflows float32 (squares ~1e40)
    "mixed": (1.0, 1e-22, 10.0),  # one task's G_tt (~1e-44) underflows next to the others: taken for absent
}
SCALE_CASES = [
    (name, engine, scale)
    for name, engine in ENGINE_CASES
    if engine != "summed"
    for scale in SCALES
]


def _scaled_case(name, engine, scale, strict=False):
    """The engine's weights and trunk ``.grad`` on float32 losses scaled per task, and the aggregator's own on the
    manual Jacobian of the same losses (its Gramian is float64)."""
    trunk, heads, xs = _model(torch.float32)
    shared, head_params = list(trunk.parameters()), list(heads.parameters())
    f = trunk(xs[0])
    losses = [(h(f).squeeze(-1) - i).pow(2).mean() * s for i, (h, s) in enumerate(zip(heads, SCALES[scale]))]
    agg, ref = make(name), make(name)
    J = _jacobian(agg.transform_items(list(losses)), shared)
    assert torch.isfinite(J).all() and (J.abs().amax(1) > 0).all()  # every row normal float32: a valid input
    torch.manual_seed(7)
    expected = ref(J)
    torch.manual_seed(7)
    with contextlib.ExitStack() as stack:
        if strict:
            stack.enter_context(strict_host_reads())
        w = _run_engine(_engines()[engine](shared, head_params), losses, agg)
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    return got, expected, (w, ref.weights if ref.weighted else None)


def _close(a, b):
    """Relative to ``b``'s own size, whatever its scale (assert_close's default atol would pass any 1e-25 update).
    ``b`` all zero: the aggregator's own documented fallback (FairGrad's solver on the 1e-22 task), so ``a`` too."""
    if not b.any():
        assert not a.any(), a
        return
    torch.testing.assert_close(a.double() / b.double().abs().max(), b.double() / b.double().abs().max(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "engine", "scale"), SCALE_CASES)
def test_every_engine_holds_gradient_scales_whose_squares_leave_float32(name, engine, scale):
    """Per-task gradients of 1e-25 or 1e20 are ordinary float32 values; their Gramian is not (it squares them).
    Every engine gives the aggregator's own answer on the Jacobian (whose Gramian is float64): no task taken for
    absent because its squared norm underflowed, no false "non-finite gradient" error from an overflow."""
    got, expected, (w, w_ref) = _scaled_case(name, engine, scale)
    assert got.abs().max() > 0 or expected.abs().max() == 0, f"{name}/{engine}/{scale}: a zero update"
    _close(got, expected)
    if w_ref is not None:
        _close(w, w_ref)
        assert w.dtype == torch.float32  # the Jacobian's, though G was redone in float64


@pytest.mark.parametrize("engine", ["loop", "batched"])
@pytest.mark.parametrize("scale", list(SCALES))
def test_on_accelerators_the_jacobian_engines_take_a_float64_gramian(engine, scale):
    """Where a host read is not free (an accelerator; emulated), no float32 product is tried first: the Gramian is
    float64 outright, and the answer is the aggregator's own."""
    got, expected, (w, w_ref) = _scaled_case("upgrad", engine, scale, strict=True)
    _close(got, expected)
    _close(w, w_ref)
    assert w.dtype == torch.float32


@pytest.mark.parametrize("scale", ["tiny", "mixed"])
def test_on_accelerators_the_gramian_engine_reports_an_underflowed_gramian(scale):
    """The gramian engine keeps its float32 Gramian on accelerators (float64 would redo its costliest products):
    a task whose squared norm underflowed is named by the deferred check, never silently dropped."""
    trunk, heads, xs = _model(torch.float32)
    agg = make("upgrad")
    agg.check = "immediate"
    f = trunk(xs[0])
    losses = [(h(f).squeeze(-1) - i).pow(2).mean() * s for i, (h, s) in enumerate(zip(heads, SCALES[scale]))]
    tasks = "[0, 1, 2]" if scale == "tiny" else "[1]"
    with strict_host_reads(), pytest.raises(ValueError, match=re.escape(f"task(s) {tasks}") + ".*method='loop'"):
        awloss.backward(losses, trunk, agg, method="gramian")


def test_on_accelerators_the_gramian_engine_passes_an_absent_or_zero_task():
    """A zero row (an absent task, a loss whose gradient is exactly 0) is not an underflow: no report."""
    trunk, heads, xs = _model(torch.float32)
    agg = make("upgrad")
    agg.check = "immediate"
    f = trunk(xs[0])
    losses = [(h(f).squeeze(-1) - i).pow(2).mean() for i, h in enumerate(heads)]
    losses[1], losses[2] = None, losses[2] * 0
    with strict_host_reads():
        w = awloss.backward(losses, trunk, agg, method="gramian")
    assert w[0] > 0 and w[1] == 0 and w[2] == 0
