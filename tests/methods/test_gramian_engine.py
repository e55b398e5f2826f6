"""``awloss.backward(method="gramian")``: the Gramian built layer by layer equals the Jacobian path's.

The oracle is the loop engine (``method="loop"``: one full backward per task into ``J``, then ``JJᵀ``): the
weights and every ``.grad`` (shared parameters and heads) must agree within 1e-5 relative in float32 and
1e-10 in float64, on every architecture the engine covers and on those it only falls back on (an LSTM).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import awloss
from awloss.aggregation import GramianAggregator

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
GRAMIAN = [n for n in awloss.available("aggregator") if issubclass(awloss.get_class(n), GramianAggregator)]


class Seq(nn.Module):
    """Token model: embedding -> TransformerEncoder -> mean over the sequence."""

    def __init__(self, batch_first: bool, tied: bool = False) -> None:
        super().__init__()
        self.batch_first, self.tied = batch_first, tied
        self.emb = nn.Embedding(11, 8, padding_idx=0)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x):
        h = self.emb(x) if self.batch_first else self.emb(x).transpose(0, 1)
        h = self.enc(h)
        if self.tied:  # weight tying: the embedding matrix is also the output projection
            h = h @ self.emb.weight.T
        return h.mean(1 if self.batch_first else 0)


class Twice(nn.Module):
    """One Linear applied by two layers (the same weight used twice), and an LSTM (no rule: the fallback)."""

    def __init__(self, lstm: bool = False) -> None:
        super().__init__()
        self.inp, self.mid = nn.Linear(5, 6), nn.Linear(6, 6)
        self.lstm = nn.LSTM(6, 6, batch_first=True) if lstm else None

    def forward(self, x):
        h = torch.tanh(self.mid(torch.tanh(self.mid(self.inp(x)))))
        if self.lstm is not None:
            h = self.lstm(h)[0][:, -1]
        return h


class Cross(nn.Module):
    """Cross-attention (``in_proj_weight`` split into q and kv: the fallback), a transposed convolution, a sparse
    embedding (its dense per-task block, as the loop engine's)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(9, 4, sparse=True)
        self.att = nn.MultiheadAttention(4, 2, batch_first=True)
        self.up = nn.ConvTranspose1d(4, 3, 3, stride=2)

    def forward(self, x):
        q = self.emb(x)
        h = self.att(q, q[:, :2], q[:, :2])[0]
        return self.up(h.transpose(1, 2)).mean(2)


class Added(nn.Module):
    """Parameters added with broadcasting: a positional table ``[1, S, d]``, a per-channel offset ``[C, 1, 1]``;
    and ``x @ W`` with ``W[d_in, d_out]`` (no transpose) and a plain ``addmm``."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 4, 3))
        self.offset = nn.Parameter(torch.randn(3, 1, 1))
        self.w = nn.Parameter(torch.randn(12, 5))
        self.b = nn.Parameter(torch.randn(5))

    def forward(self, x):
        h = (x + self.pos).unsqueeze(-1).transpose(1, 2) + self.offset  # [B, 3, 4, 1]
        h = torch.tanh(h.flatten(1))
        return torch.tanh(torch.addmm(self.b, h, self.w, beta=0.5, alpha=2.0) + h @ self.w)


def mlp():
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6, bias=False), nn.Tanh()), torch.randn(7, 5), 6


def cnn(eval_bn: bool = False):
    trunk = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, groups=2),
        nn.GroupNorm(2, 4), nn.Flatten(1, 2), nn.Conv1d(8, 3, 2), nn.Flatten(), nn.Linear(3, 6), nn.LayerNorm(6),
    )
    if eval_bn:
        trunk[1].eval()
        trunk[1].running_mean.uniform_(-1, 1)
    return trunk, torch.randn(3, 2, 6, 6), 6


ARCHS = {
    "mlp": mlp,
    "cnn_batchnorm": cnn,
    "cnn_batchnorm_eval": lambda: cnn(True),
    "transformer_batch_first": lambda: (Seq(True), torch.randint(0, 11, (3, 5)), 8),
    "transformer_seq_first": lambda: (Seq(False), torch.randint(0, 11, (3, 5)), 8),
    "embedding_tied": lambda: (Seq(True, tied=True), torch.randint(0, 11, (3, 5)), 11),
    "lstm_fallback": lambda: (Twice(lstm=True), torch.randn(3, 4, 5), 6),
    "linear_used_twice": lambda: (Twice(), torch.randn(7, 5), 6),
    "cross_attention_sparse": lambda: (Cross(), torch.randint(0, 9, (3, 5)), 3),
    "broadcast_and_matmul": lambda: (Added(), torch.randn(6, 4, 3), 5),
}


def step(arch, method, dtype, name="upgrad", T=3, absent=(), zero=()):
    """One ``awloss.backward`` from fresh ``.grad``; returns the weights and every parameter's ``.grad``."""
    torch.manual_seed(0)
    trunk, x, width = ARCHS[arch]()
    heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(T))
    trunk.to(dtype), heads.to(dtype)
    x = x.to(dtype) if x.is_floating_point() else x
    f = trunk(x)
    losses = [(h(f).squeeze(-1) - i).pow(2).mean() for i, h in enumerate(heads)]
    losses = [None if i in absent else 0.0 * L if i in zero else L for i, L in enumerate(losses)]
    agg = awloss.get_class(name)._make_example(T - len(absent))
    torch.manual_seed(7)
    w = awloss.backward(losses, trunk.parameters(), agg, method=method)
    return w, [p.grad for p in [*trunk.parameters(), *heads.parameters()]]


def assert_same(a, b, dtype):
    wa, ga = a
    wb, gb = b
    tol = TOL[dtype]
    torch.testing.assert_close(wb, wa, rtol=tol, atol=tol * wa.abs().max())
    # a gradient that is 0 by symmetry (a bias before BatchNorm) is compared at the others' scale, not its round-off
    scale = max(g.to_dense().abs().max() for g in ga if g is not None)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(y.to_dense(), x.to_dense(), rtol=tol, atol=tol * scale)


@pytest.fixture
def rules(monkeypatch):
    """Every parameter that has a rule goes through it (Δ of its node's output), none through its own block:
    at these sizes the engine would otherwise let autograd compute the small blocks directly."""
    from awloss._backward import _gram_plan as _gram

    monkeypatch.setattr(_gram, "DIRECT_BYTES", 0)


@pytest.fixture
def batched_passes(monkeypatch):
    """The gramian engine's passes as one vmap-ed backward, as on accelerators (``auto_batches`` is True there)."""
    from awloss._backward import _engine

    monkeypatch.setattr(_engine, "auto_batches", lambda device: True)


@pytest.mark.parametrize("route", ["rules", "default", "batched"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_the_gramian_engine_equals_the_jacobian_path(arch, dtype, route, request):
    ref = step(arch, "loop", dtype)
    if route == "rules":
        request.getfixturevalue("rules")
    if route == "batched":
        request.getfixturevalue("rules")
        request.getfixturevalue("batched_passes")
    assert_same(ref, step(arch, "gramian", dtype), dtype)


def test_batched_passes_run_one_vmapped_backward(monkeypatch, rules, batched_passes):
    """On accelerators the T passes are one ``is_grads_batched`` backward; a sparse gradient keeps the loop."""
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: (calls.append(k.get("is_grads_batched")), grad(*a, **k))[1])
    step("transformer_batch_first", "gramian", torch.float32, T=4)
    assert calls.count(True) == 1
    calls.clear()
    step("cross_attention_sparse", "gramian", torch.float32, T=4)
    assert True not in calls


def test_a_backward_that_cannot_batch_falls_back_to_the_loop_once_with_a_warning(monkeypatch, rules, batched_passes):
    from awloss._backward import _gram as _gramian

    tries = []

    def no_rule(*args):
        tries.append(1)
        raise RuntimeError("Batching rule not implemented for aten::something_custom")

    monkeypatch.setattr(_gramian.GramianEngine, "_batched", staticmethod(no_rule))
    monkeypatch.setattr(_gramian, "_UNBATCHED", set())
    ref = step("mlp", "loop", torch.float64)
    with pytest.warns(UserWarning, match=r"cannot be batched with vmap \(Batching rule not implemented.*one pass per task"):
        got = step("mlp", "gramian", torch.float64)
    assert_same(ref, got, torch.float64)
    assert len(tries) == 1


def test_an_error_that_is_not_about_vmap_is_raised(monkeypatch, batched_passes):
    from awloss._backward import _gram as _gramian

    def broken(*args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(_gramian.GramianEngine, "_batched", staticmethod(broken))
    monkeypatch.setattr(_gramian, "_UNBATCHED", set())
    with pytest.raises(RuntimeError, match="out of memory"):
        step("mlp", "gramian", torch.float64)


@pytest.mark.parametrize("name", GRAMIAN)
def test_every_gramian_aggregator_gets_the_same_weights_and_grad(name, rules):
    ref = step("cnn_batchnorm", "loop", torch.float64, name)
    assert_same(ref, step("cnn_batchnorm", "gramian", torch.float64, name), torch.float64)


@pytest.mark.parametrize("case", [{"T": 1}, {"absent": (1,)}, {"zero": (0,)}, {"T": 4, "absent": (3,), "zero": (1,)}])
def test_one_task_an_absent_task_and_a_zero_loss(case, rules):
    for dtype in (torch.float32, torch.float64):
        assert_same(step("transformer_batch_first", "loop", dtype, **case),
                    step("transformer_batch_first", "gramian", dtype, **case), dtype)


def test_the_linear_gramian_by_rows_equals_the_jacobian_whichever_way_it_is_computed(monkeypatch):
    """Both ways of the Linear rule (the per-sample identity, chunks of ``J``) and a chunk of one row."""
    from awloss._backward import _gram as _gramian

    torch.manual_seed(0)
    a, d = torch.randn(5, 7, dtype=torch.float64), torch.randn(3, 5, 4, dtype=torch.float64)
    J = torch.einsum("tno,ni->toi", d, a).reshape(3, -1)
    torch.testing.assert_close(_gramian._rows_gramian(a, d, torch.float64), J @ J.T)  # N = 5 < d_in: the identity
    a1, d1 = torch.randn(50, 2, dtype=torch.float64), torch.randn(3, 50, 4, dtype=torch.float64)
    J1 = torch.einsum("tno,ni->toi", d1, a1).reshape(3, -1)
    torch.testing.assert_close(_gramian._rows_gramian(a1, d1, torch.float64), J1 @ J1.T)  # N = 50 > d_in: J in one chunk
    monkeypatch.setattr(_gramian, "CHUNK_BYTES", 1)
    a2, d2 = torch.randn(40, 3, dtype=torch.float64), torch.randn(3, 40, 4, dtype=torch.float64)
    J2 = torch.einsum("tno,ni->toi", d2, a2).reshape(3, -1)
    torch.testing.assert_close(_gramian._rows_gramian(a2, d2, torch.float64), J2 @ J2.T)  # N large: J by chunks of one row


def test_heads_given_as_task_params_and_retain_graph():
    torch.manual_seed(0)
    trunk, x, width = mlp()
    heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(2))
    f = trunk(x)
    losses = [h(f).pow(2).mean() for h in heads]
    ref = [torch.autograd.grad(sum(losses), list(heads.parameters()), retain_graph=True)]
    awloss.backward(losses, trunk.parameters(), awloss.get("mgda"), method="gramian",
                    task_params=heads.parameters(), retain_graph=True)
    for p, g in zip(heads.parameters(), ref[0]):
        torch.testing.assert_close(p.grad, g)
    sum(losses).backward()  # the graph was kept


def test_a_method_that_needs_the_jacobian_says_so():
    trunk, x, width = mlp()
    heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(2))
    f = trunk(x)
    losses = [h(f).pow(2).mean() for h in heads]
    with pytest.raises(ValueError, match=r"method='gramian'.*GradDrop needs the Jacobian.*method='loop'"):
        awloss.backward(losses, trunk.parameters(), awloss.get("graddrop"), method="gramian")
    with pytest.raises(ValueError, match="cannot be combined with `representation=`"):
        awloss.backward(losses, trunk.parameters(), awloss.get("upgrad"), method="gramian", representation=f)


def _choice(trunk, x, width, name="upgrad", T=10, budget=None):
    from awloss._backward import _choose
    from awloss._backward._gather import gather_losses

    heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(T))
    f = trunk(x)
    task = gather_losses([h(f).pow(2).mean() for h in heads], awloss.get_class(name)._make_example(T), None)
    agg = awloss.get_class(name)._make_example(T)
    return _choose.choose_engine(task, list(trunk.parameters()), agg, None, None, "auto", budget).name


def test_auto_chooses_the_gramian_engine_where_the_identity_saves_enough():
    """Wide Linear layers on a small batch (N = 16 < width 1024): the per-sample identity saves ~80 % of the
    weight gradients' multiply-adds, and ``auto`` takes the gramian engine; where the batch is wider than the
    layers, on convolutions or on a small model it keeps the Jacobian path (measured in benchmarks/aggregators.py)."""
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU())
    assert _choice(wide, torch.randn(16, 512), 1024) == "gramian"
    assert _choice(wide, torch.randn(2048, 512), 1024) == "loop"  # N > width: nothing to save
    assert _choice(wide, torch.randn(16, 512), 1024, name="graddrop") == "loop"  # needs J
    small = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
    assert _choice(small, torch.randn(16, 64), 256) == "loop"  # saves too few multiply-adds to pay for itself
    conv = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 256, 3), nn.Flatten(), nn.LazyLinear(8))
    conv(torch.randn(1, 3, 8, 8))
    assert _choice(conv, torch.randn(16, 3, 8, 8), 8) == "loop"


def test_the_plan_counts_what_the_identity_saves():
    """The cost model against the multiply-adds written out for one Linear(8, 32) on a batch of 4, T = 3."""
    from awloss._backward import _gram_plan

    lin = nn.Linear(8, 32, bias=False)
    x = torch.randn(4, 8)
    f = lin(x)
    made = _gram_plan.plan([f[:, t].sum() for t in range(3)], [lin.weight], None)
    by_j = 3 * 4 * 32 * 8 + 9 * 32 * 8  # T N o i + T² o i
    by_identity = 16 * (8 + 3 * 32) + 9 * 4 * 32  # N²(i + T o) + T² N o
    assert made.saved == by_j - by_identity and made.floor == 2 * 3 * 4 * 32 * 8
    assert [p for p, _ in made.covered] == [lin.weight] and made.direct == made.fallback == []


def test_auto_chooses_the_gramian_engine_over_the_memory_budget_only(monkeypatch):
    from awloss._backward import _choose
    from awloss._backward._gather import gather_losses

    trunk, x, width = mlp()
    heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(2))
    shared = list(trunk.parameters())
    n_bytes = 2 * sum(p.numel() * p.element_size() for p in shared)

    def chosen(name, budget):
        f = trunk(x)
        task = gather_losses([h(f).pow(2).mean() for h in heads], awloss.get(name), None)
        return _choose.choose_engine(task, shared, awloss.get(name), None, None, "auto", budget).name

    assert chosen("upgrad", n_bytes) == "loop" and chosen("upgrad", None) == "loop"
    assert chosen("upgrad", n_bytes - 1) == "gramian"
    assert chosen("graddrop", n_bytes - 1) == "loop"  # needs J: the budget does not apply
    assert chosen("grad_sum", n_bytes - 1) == "summed"  # one backward of ΣLᵢ is cheaper still


@pytest.mark.parametrize(
    "arch", ["mlp", "cnn_batchnorm", "transformer_batch_first", "transformer_seq_first", "broadcast_and_matmul"]
)
def test_these_architectures_need_no_fallback(arch, monkeypatch, rules):
    """Every shared parameter of these models has a rule (no per-parameter Jacobian block is formed)."""
    from awloss._backward import _gram as _gramian

    engines = []
    init = _gramian.GramianEngine.__init__
    monkeypatch.setattr(_gramian.GramianEngine, "__init__", lambda self, *a, **k: (engines.append(self), init(self, *a, **k))[1])
    step(arch, "gramian", torch.float64)
    assert engines[0].fallback == [] and len(engines[0].covered) > 0


@pytest.mark.parametrize("n", [1, 2, 7, 300])
def test_the_embedding_rows_are_grouped_like_unique_without_reading_the_count(n):
    """``torch.unique``'s inverse (a host sync on accelerators: it sizes its output) by sort and cumsum."""
    from awloss._backward._sites import _groups

    torch.manual_seed(n)
    for high in (1, 3, 50):
        idx = torch.randint(0, high, (n,))
        torch.testing.assert_close(_groups(idx), torch.unique(idx, return_inverse=True)[1])


@pytest.mark.parametrize("route", ["default", "rules"])
def test_the_reused_block_buffer_holds_nothing_of_the_previous_step(route, request):
    """The blocks' flat buffer is kept across calls: in each step some tasks do not reach a parameter (their rows
    must be 0, not a previous step's), and another model uses the same aggregator in between (another buffer)."""
    if route == "rules":
        request.getfixturevalue("rules")
    torch.manual_seed(0)
    trunk, x, width = cnn()
    extra = nn.Linear(width, width)
    heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(3))
    shared = [*trunk.parameters(), *extra.parameters()]
    params = [*shared, *heads.parameters()]

    def run(method, agg, bypass):
        for p in params:
            p.grad = None
        f = trunk(x)
        g = extra(f)
        losses = [(h(f if i in bypass else g).squeeze(-1) - i).pow(2).mean() for i, h in enumerate(heads)]
        w = awloss.backward(losses, shared, agg, method=method)
        return w, [p.grad for p in params]

    ours, ref = awloss.get("upgrad"), awloss.get("upgrad")
    for bypass in [(), (1,), (0, 2), "other", (), (2,)]:
        if bypass == "other":  # another model with the same aggregator in between
            other, xo, wo = mlp()
            f = other(xo)
            awloss.backward([f.sum(), f.pow(2).sum()], other.parameters(), ours, method="gramian")
            continue
        assert_same(run("loop", ref, bypass), run("gramian", ours, bypass), torch.float32)


def test_blocks_of_different_dtypes_keep_their_own_buffers():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 6), nn.Linear(6, 5).double()
    heads = nn.ModuleList(nn.Linear(5, 1).double() for _ in range(2))
    x = torch.randn(7, 4)

    def run(method):
        for p in [*a.parameters(), *b.parameters(), *heads.parameters()]:
            p.grad = None
        f = b(torch.tanh(a(x)).double())
        w = awloss.backward([h(f).pow(2).mean() for h in heads], [*a.parameters(), *b.parameters()],
                            awloss.get("mgda"), method=method)
        return w, [p.grad for p in [*a.parameters(), *b.parameters(), *heads.parameters()]]

    assert_same(run("loop"), run("gramian"), torch.float32)


def _amp_step(arch, method, dtype, scaler=None, T=3):
    torch.manual_seed(0)
    trunk, x, width = ARCHS[arch]()
    heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(T))
    with torch.autocast("cpu", dtype=dtype):
        f = trunk(x)
        losses = [(h(f).float().squeeze(-1) - i).pow(2).mean() for i, h in enumerate(heads)]
    w = awloss.backward(losses, trunk.parameters(), awloss.get("upgrad"), method=method, scaler=scaler)
    return w, [p.grad for p in [*trunk.parameters(), *heads.parameters()]]


@pytest.mark.parametrize("arch", ["mlp", "cnn_batchnorm", "transformer_batch_first"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_under_autocast_the_casts_are_seen_through(arch, dtype, monkeypatch, rules):
    """autocast casts each weight (``ToCopyBackward0``) before its Linear or convolution: the rules still apply
    (no per-parameter block of the whole Jacobian) and the result equals the Jacobian path's at half precision."""
    from awloss._backward import _gram as _gramian

    engines = []
    init = _gramian.GramianEngine.__init__
    monkeypatch.setattr(_gramian.GramianEngine, "__init__", lambda self, *a, **k: (engines.append(self), init(self, *a, **k))[1])
    wa, ga = _amp_step(arch, "loop", dtype)
    wb, gb = _amp_step(arch, "gramian", dtype)
    shapes = [tuple(p.shape) for p, _ in engines[0].covered]
    assert shapes and engines[0].fallback == [], engines[0].fallback
    assert all(len(s) < 2 or s in shapes for s in (tuple(p.shape) for p in engines[0].shared if p.dim() >= 2))
    torch.testing.assert_close(wb.float(), wa.float(), rtol=3e-2, atol=3e-2 * wa.abs().max().item())
    scale = max(g.abs().max() for g in ga if g is not None)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(y, x, rtol=5e-2, atol=5e-2 * scale)


def test_float16_with_a_grad_scaler_keeps_the_gramian_in_float32():
    """The scaled per-task gradients' Gramian (here ~1e11, beyond float16's 65504) is formed in float32 and
    unscaled there: the step is not skipped as an overflow, and the weights equal the Jacobian path's."""
    def run(method):
        torch.manual_seed(0)
        trunk = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        heads = nn.ModuleList(nn.Linear(256, 1) for _ in range(3))
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
        with torch.autocast("cpu", dtype=torch.float16):
            f = trunk(torch.randn(16, 64))
            losses = [(h(f).float().squeeze(-1) - 3).pow(2).mean() for h in heads]
        return awloss.backward(losses, trunk.parameters(), awloss.get("upgrad"), method=method, scaler=scaler)

    ref, got = run("loop"), run("gramian")
    assert ref is not None and got is not None
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3)


def test_reentrant_checkpointing_is_refused_by_gramian_and_avoided_by_auto():
    """Inside reentrant checkpointing the parameters' uses are not in the outer graph: ``gramian`` would leave
    them without a gradient (torch asserted internally); it raises, and ``auto`` over its budget keeps the loop."""
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    trunk, x, width = mlp()
    heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(2))
    x.requires_grad_(True)

    def losses(reentrant):
        for p in [*trunk.parameters(), *heads.parameters()]:
            p.grad = None
        f = checkpoint(trunk, x, use_reentrant=reentrant)
        return [h(f).pow(2).mean() for h in heads]

    with pytest.raises(ValueError, match=r"reentrant checkpointing.*use_reentrant=False.*method='loop'"):
        awloss.backward(losses(True), trunk.parameters(), awloss.get("upgrad"), method="gramian")
    awloss.backward(losses(True), trunk.parameters(), awloss.get("upgrad"), method="loop")
    ref = [p.grad.clone() for p in trunk.parameters()]
    awloss.backward(losses(True), trunk.parameters(), awloss.get("upgrad"), memory_budget=1)  # auto, over budget
    for p, g in zip(trunk.parameters(), ref):
        torch.testing.assert_close(p.grad, g)
    awloss.backward(losses(False), trunk.parameters(), awloss.get("upgrad"), method="gramian")  # non-reentrant: fine
    for p, g in zip(trunk.parameters(), ref):
        torch.testing.assert_close(p.grad, g)
