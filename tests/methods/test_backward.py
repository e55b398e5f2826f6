"""``awloss.backward``: accumulation, head gradients, the representation path, manual equivalence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import awloss


class Net(nn.Module):
    def __init__(self, T=3, d_in=5, d=6):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(d_in, d), nn.Tanh(), nn.Linear(d, d), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(d, 1) for _ in range(T)])

    def forward(self, x, ys):
        f = self.trunk(x)
        return f, [((h(f).squeeze(-1) - y) ** 2).mean() for h, y in zip(self.heads, ys)]


def setup(T=3, dtype=torch.float64):
    torch.manual_seed(0)
    net = Net(T).to(dtype)
    x = torch.randn(16, 5, dtype=dtype)
    ys = [torch.randn(16, dtype=dtype) * (i + 1) for i in range(T)]
    return net, x, ys


def manual_jacobian(losses, params):
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(L, params, retain_graph=True)]) for L in losses]
    return torch.stack(rows)


def grads(params):
    return torch.cat([p.grad.reshape(-1) for p in params])


@pytest.mark.parametrize(
    "name", ["upgrad", "mgda", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "config", "grad_mean", "grad_sum"]
)
@pytest.mark.parametrize("method", ["batched", "loop"])
def test_equals_the_manual_computation(name, method):
    net, x, ys = setup()
    shared, heads = list(net.trunk.parameters()), list(net.heads.parameters())
    _, losses = net(x, ys)
    J = manual_jacobian(losses, shared)
    head_ref = torch.autograd.grad(sum(losses), heads, retain_graph=True)
    torch.manual_seed(1)
    ref = awloss.get(name)
    expected = ref(J)
    torch.manual_seed(1)
    w = awloss.backward(losses, net.trunk.parameters(), awloss.get(name), method=method)
    torch.testing.assert_close(grads(shared), expected)
    torch.testing.assert_close(w, ref.weights)
    for p, g in zip(heads, head_ref):  # heads get ∇ΣLᵢ, found without listing them
        torch.testing.assert_close(p.grad, g)


def test_gradients_accumulate_like_tensor_backward():
    net, x, ys = setup()
    shared = list(net.trunk.parameters())
    for _ in range(2):
        _, losses = net(x, ys)
        awloss.backward(losses, shared, awloss.get("upgrad"))
    twice_shared, twice_head = grads(shared).clone(), net.heads[0].weight.grad.clone()
    net.zero_grad()
    _, losses = net(x, ys)
    awloss.backward(losses, shared, awloss.get("upgrad"))
    torch.testing.assert_close(twice_shared, 2 * grads(shared))
    torch.testing.assert_close(twice_head, 2 * net.heads[0].weight.grad)


def test_representation_path_is_mgda_ub():
    net, x, ys = setup()
    shared = list(net.trunk.parameters())
    feats, losses = net(x, ys)
    Jz = torch.stack([torch.autograd.grad(L, feats, retain_graph=True)[0] for L in losses])
    ref = awloss.get("mgda")
    upd_z = ref(Jz)
    expected = torch.autograd.grad(feats, shared, upd_z, retain_graph=True)
    head_ref = torch.autograd.grad(sum(losses), list(net.heads.parameters()), retain_graph=True)
    w = awloss.backward(losses, shared, awloss.get("mgda"), representation=feats)
    torch.testing.assert_close(w, ref.weights)
    for p, g in zip(shared, expected):
        torch.testing.assert_close(p.grad, g)
    for p, g in zip(net.heads.parameters(), head_ref):
        torch.testing.assert_close(p.grad, g)


def test_graddrop_through_the_representation_returns_none():
    net, x, ys = setup()
    feats, losses = net(x, ys)
    assert awloss.backward(losses, net.trunk, awloss.get("graddrop"), representation=feats) is None
    assert all(p.grad is not None for p in net.parameters())


def test_input_forms_and_explicit_task_params():
    net, x, ys = setup(T=2)
    _, (l1, l2) = net(x, ys)
    w = awloss.backward({"a": l1, "b": l2}, net.trunk, awloss.get("grad_sum"), task_params=net.heads[0].parameters())
    torch.testing.assert_close(w, torch.ones(2, dtype=torch.float64))
    assert net.heads[0].weight.grad is not None and net.heads[1].weight.grad is None
    net.zero_grad()
    _, losses = net(x, ys)
    awloss.backward(torch.stack(losses), net.trunk, awloss.get("grad_sum"))
    sum_grad = grads(list(net.parameters())).clone()
    net.zero_grad()
    _, losses = net(x, ys)
    sum(losses).backward()
    torch.testing.assert_close(sum_grad, grads(list(net.parameters())))


def test_dbmtl_differentiates_the_log_losses():
    net, x, ys = setup()
    shared = list(net.trunk.parameters())
    _, losses = net(x, ys)
    J = manual_jacobian([torch.log(L + 1e-8) for L in losses], shared)
    expected = awloss.get("dbmtl")(J)
    awloss.backward(losses, shared, awloss.get("dbmtl"))
    torch.testing.assert_close(grads(shared), expected)


def test_retain_graph_allows_a_second_call_and_errors_are_clear():
    net, x, ys = setup()
    _, losses = net(x, ys)
    awloss.backward(losses, net.trunk, awloss.get("mgda"), retain_graph=True)
    awloss.backward(losses, net.trunk, awloss.get("mgda"))
    with pytest.raises(ValueError, match="does not require grad"):
        awloss.backward([torch.tensor(1.0), torch.tensor(2.0)], net.trunk, awloss.get("mgda"))
    _, losses = net(x, ys)
    with pytest.raises(ValueError, match="`shared_params` is empty"):
        awloss.backward(losses, [], awloss.get("mgda"))
    with pytest.raises(TypeError, match="`aggregator` must be an awloss Aggregator"):
        awloss.backward(losses, net.trunk, awloss.get("uw", num_tasks=3))
    with pytest.raises(ValueError, match="`method`"):
        awloss.backward(losses, net.trunk, awloss.get("mgda"), method="vmap")
    bad = [losses[0], losses[1] * float("nan"), losses[2]]
    with pytest.raises(ValueError, match=r"Loss `losses\[1\]` must be finite"):
        agg = awloss.get("mgda")
        awloss.backward(bad, net.trunk, agg)
        agg.verify()  # deferred: the flag of the call is read here (or at the next call)


@pytest.mark.parametrize("name", ["grad_mean", "grad_sum", "upgrad"])
def test_unused_parameter_and_non_finite_gradient_of_finite_losses(name):
    """Mean/Sum take one backward of ΣLᵢ: an unused parameter keeps ``.grad = None``, NaN gradients raise."""
    net, x, ys = setup()
    extra = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    _, losses = net(x, ys)
    awloss.backward(losses, [*net.trunk.parameters(), extra], awloss.get(name))
    assert extra.grad is None and all(p.grad is not None for p in net.trunk.parameters())
    _, losses = net(x, ys)
    bad = [losses[0], losses[1] + (net.trunk[0].weight[0, 0] * 0).sqrt(), losses[2]]  # finite, gradient inf
    with pytest.raises(ValueError, match="NaN or inf"):
        agg = awloss.get(name)
        awloss.backward(bad, net.trunk, agg)
        agg.verify()


def test_float32_model_and_unused_shared_parameter():
    net, x, ys = setup(dtype=torch.float32)
    extra = nn.Parameter(torch.zeros(3))
    _, losses = net(x, ys)
    w = awloss.backward(losses, [*net.trunk.parameters(), extra], awloss.get("upgrad"))
    assert w.dtype == torch.float32 and extra.grad is None
    assert all(p.grad.dtype == torch.float32 for p in net.trunk.parameters())


def test_readme_example_runs():
    from tests.integration._readme import run_section

    ns = run_section("Gradient-level aggregators")
    assert ns["weights"].shape == (3,) and torch.isfinite(ns["weights"]).all()
    assert all(p.grad is not None for p in ns["heads"].parameters())


@pytest.mark.parametrize("T", [3, 8, 10, 13, 16, 17])
def test_blocked_gramian_equals_the_product(T):
    from awloss._backward import _gramian

    J = torch.randn(T, 50, dtype=torch.float64)
    G = _gramian(J)
    torch.testing.assert_close(G, J @ J.T)
    assert torch.equal(G, G.T) or not 8 <= T <= 16  # the blocked path mirrors its lower triangle


def test_ten_tasks_equal_the_manual_computation():
    """T = 10 goes through the blocked Gramian."""
    net, x, ys = setup(T=10)
    shared = list(net.trunk.parameters())
    _, losses = net(x, ys)
    expected = awloss.get("upgrad")(manual_jacobian(losses, shared))
    awloss.backward(losses, shared, awloss.get("upgrad"))
    torch.testing.assert_close(grads(shared), expected)
