"""``awloss.backward`` on the paths the outside review found broken (issue 11 §4, issue 13 §4)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.utils.checkpoint as cp
from torch import nn

import awloss
from awloss._backward import _engine

T = 3


def _grads(params):
    return torch.cat([(p.grad.to_dense() if p.grad.is_sparse else p.grad).reshape(-1) for p in params])


# ---------------------------------------------------------------- empty shared parameters
@pytest.mark.parametrize("path", ["parameters", "representation"])
def test_empty_or_exhausted_shared_params_raise_on_every_path(path):
    torch.manual_seed(0)
    trunk, heads = nn.Linear(4, 5), nn.ModuleList(nn.Linear(5, 1) for _ in range(T))
    once = trunk.parameters()  # made once outside the loop: exhausted after the first step
    for shared in ([], once, once):
        f = trunk(torch.randn(6, 4))
        losses = [h(f).pow(2).mean() for h in heads]
        kw = {"representation": f} if path == "representation" else {}
        if shared is once and not isinstance(shared, list) and trunk.weight.grad is None:
            awloss.backward(losses, shared, awloss.get("upgrad"), **kw)  # first use: fine
            assert trunk.weight.grad is not None
            continue
        with pytest.raises(ValueError, match="`shared_params` is empty"):
            awloss.backward(losses, shared, awloss.get("upgrad"), **kw)


# ---------------------------------------------------------------- paths bypassing the representation
class Skip(nn.Module):
    """A trunk ``z = l2(tanh(l1 x))`` whose heads read ``z`` and, U-Net style, the earlier ``h = tanh(l1 x)``."""

    def __init__(self, bypass_to_heads: bool = True):
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 6), nn.Linear(6, 5)
        self.heads = nn.ModuleList(nn.Linear(5 + 6 * bypass_to_heads, 1) for _ in range(T))
        self.bypass_to_heads = bypass_to_heads

    def forward(self, x):
        h = torch.tanh(self.l1(x))
        z = self.l2(h)
        inp = torch.cat([z, h], dim=1) if self.bypass_to_heads else z
        losses = [(head(inp).squeeze(-1) - i).pow(2).mean() for i, head in enumerate(self.heads)]
        if not self.bypass_to_heads:  # a loss term reading the trunk's first layer directly
            losses[0] = losses[0] + 0.3 * h.pow(2).mean()
        return z, losses


@pytest.mark.parametrize("bypass_to_heads", [True, False])
def test_grad_sum_through_a_representation_with_bypass_paths_equals_the_summed_backward(bypass_to_heads):
    """Issue 11 §4: the bypass paths were dropped (first layer's gradient norm 0.29 instead of 0.79 here)."""
    torch.manual_seed(0)
    net = Skip(bypass_to_heads).double()
    x = torch.randn(16, 4, dtype=torch.float64)
    _, losses = net(x)
    sum(losses).backward()
    expected = _grads(net.parameters()).clone()
    net.zero_grad()
    z, losses = net(x)
    awloss.backward(losses, [*net.l1.parameters(), *net.l2.parameters()], awloss.get("grad_sum"), representation=z)
    torch.testing.assert_close(_grads(net.parameters()), expected)


def test_an_aggregator_through_a_representation_with_bypass_paths_is_exact():
    """θ.grad = (∂z/∂θ)ᵀ A(J_z) + ∇ΣLᵢ through the bypass paths; heads get ∇ΣLᵢ."""
    torch.manual_seed(0)
    net = Skip().double()
    x = torch.randn(16, 4, dtype=torch.float64)
    shared = [*net.l1.parameters(), *net.l2.parameters()]
    z, losses = net(x)
    Jz = torch.stack([torch.autograd.grad(L, z, retain_graph=True)[0] for L in losses])
    ref = awloss.get("upgrad")
    update_z = ref(Jz)
    total = torch.autograd.grad(sum(losses), shared + list(net.heads.parameters()), retain_graph=True)
    through_z = torch.autograd.grad(z, shared, Jz.sum(0), retain_graph=True)
    aggregated = torch.autograd.grad(z, shared, update_z, retain_graph=True)
    expected = [t - s + a for t, s, a in zip(total, through_z, aggregated)] + list(total[len(shared) :])
    w = awloss.backward(losses, shared, awloss.get("upgrad"), representation=z)
    torch.testing.assert_close(w, ref.weights)
    for p, g in zip(shared + list(net.heads.parameters()), expected):
        torch.testing.assert_close(p.grad, g)


def test_representation_that_no_shared_parameter_reaches_raises():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 5), nn.Linear(4, 5)
    heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(T))
    z = a(torch.randn(6, 4))
    losses = [h(z).pow(2).mean() for h in heads]
    with pytest.raises(ValueError, match="No parameter in `shared_params` is used"):
        awloss.backward(losses, b.parameters(), awloss.get("upgrad"), representation=z)


# ---------------------------------------------------------------- DB-MTL keeps state per parameter
def test_dbmtl_refuses_the_representation_path():
    """Its gradient average is per column: on the representation path that is per sample (issue 11 §4)."""
    torch.manual_seed(0)
    trunk, heads = nn.Linear(4, 5), nn.ModuleList(nn.Linear(5, 1) for _ in range(T))
    f = trunk(torch.randn(6, 4))
    losses = [h(f).pow(2).mean() for h in heads]
    with pytest.raises(ValueError, match="per column.*representation="):
        awloss.backward(losses, trunk.parameters(), awloss.get("dbmtl"), representation=f)
    awloss.backward(losses, trunk.parameters(), awloss.get("dbmtl"))  # the parameter path is fine
    assert awloss.get_class("dbmtl").state_per_column and not awloss.get_class("upgrad").state_per_column


# ---------------------------------------------------------------- batched path fallbacks (issue 13 §4)
class NotVmappable(torch.autograd.Function):
    """A custom Function whose backward reads a value on the host: it cannot run under vmap."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        if float(g.abs().sum()) < 0:  # pragma: no cover - never true; the read is what matters
            raise AssertionError
        return g * 2


class Vmappable(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.tanh()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


def _unbatchable_model(kind: str):
    torch.manual_seed(0)
    emb, lin = nn.Embedding(10, 4, sparse=kind == "sparse"), nn.Linear(4, 4)
    heads = nn.ModuleList(nn.Linear(4, 1) for _ in range(T))

    def losses():
        h = emb(torch.tensor([1, 2, 3, 1, 7]))
        if kind == "reentrant":
            f = cp.checkpoint(lin, h, use_reentrant=True)
        elif kind == "custom":
            f = NotVmappable.apply(lin(h))
        elif kind == "declared":
            f = Vmappable.apply(lin(h))
        else:
            f = lin(h)
        return [(hd(f).squeeze(-1) - i).pow(2).mean() for i, hd in enumerate(heads)]

    return [*emb.parameters(), *lin.parameters()], heads, losses


def _reference(kind):
    """UPGrad of the Jacobian by autograd.grad (reentrant checkpointing refuses it: same model unwrapped)."""
    shared, heads, losses = _unbatchable_model("plain" if kind == "reentrant" else kind)
    ls = losses()
    rows = [torch.cat([g.to_dense().reshape(-1) if g.is_sparse else g.reshape(-1)
                       for g in torch.autograd.grad(L, shared, retain_graph=True)]) for L in ls]
    return awloss.get("upgrad")(torch.stack(rows))


@pytest.fixture
def auto_batches(monkeypatch):
    """Make ``method="auto"`` choose the batched path on the CPU, as it does on accelerators."""
    monkeypatch.setattr(_engine, "auto_batches", lambda device: True)
    monkeypatch.setattr(_engine, "_SAID", set())


@pytest.mark.parametrize("kind", ["sparse", "reentrant", "custom"])
def test_auto_falls_back_to_the_loop_and_says_so_once(kind, auto_batches):
    expected = _reference(kind)
    shared, heads, losses = _unbatchable_model(kind)
    with pytest.warns(UserWarning, match="uses the per-task loop instead of the batched backward"):
        awloss.backward(losses(), shared, awloss.get("upgrad"))
    torch.testing.assert_close(_grads(shared), expected)
    for p in shared:
        p.grad = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        awloss.backward(losses(), shared, awloss.get("upgrad"))  # said once only
    torch.testing.assert_close(_grads(shared), expected)


@pytest.mark.parametrize(
    ("kind", "error", "match"),
    [
        ("sparse", ValueError, "sparse gradient.*method='loop'"),
        ("reentrant", ValueError, "reentrant checkpointing.*method='loop'"),
        ("custom", RuntimeError, "cannot be batched with vmap.*method='loop'"),
    ],
)
def test_explicit_batched_says_why_and_what_to_use(kind, error, match):
    shared, heads, losses = _unbatchable_model(kind)
    with pytest.raises(error, match=match):
        awloss.backward(losses(), shared, awloss.get("upgrad"), method="batched")


def test_a_function_declared_vmappable_keeps_the_batched_path(auto_batches):
    expected = _reference("declared")
    shared, heads, losses = _unbatchable_model("declared")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        awloss.backward(losses(), shared, awloss.get("upgrad"))
    torch.testing.assert_close(_grads(shared), expected)


def test_the_representation_path_batches_above_an_unbatchable_trunk(auto_batches):
    """Below ``representation`` the trunk takes one ordinary backward: a sparse embedding there is fine."""
    torch.manual_seed(0)
    emb, heads = nn.Embedding(10, 4, sparse=True), nn.ModuleList(nn.Linear(4, 1) for _ in range(T))
    z = emb(torch.tensor([1, 2, 3]))
    losses = [h(z).pow(2).mean() for h in heads]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        awloss.backward(losses, emb.parameters(), awloss.get("upgrad"), representation=z)
    assert emb.weight.grad.is_sparse
