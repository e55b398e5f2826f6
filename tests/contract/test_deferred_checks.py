"""Zero host reads in a default training step, for every registered method (new ones join automatically).

* A ``TorchFunctionMode`` counts ``item``/``tolist``/``__bool__``/``__float__``/``__int__`` in a default CPU
  step: at most one, and only of a flag that an earlier step produced (the deferred check's read).
* Every method runs a default step on the ``meta`` device (no data: any data-dependent host read fails),
  built under ``torch.device("meta")`` and moved with ``Module.to("meta")``.
* The deferred check raises the immediate check's error one call late (next call, ``.weights``, ``verify()``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import awloss
from awloss import _checks

WEIGHTINGS = awloss.available("weighting")
AGGREGATORS = awloss.available("aggregator")
T = 3
READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__"}


class HostReads(TorchFunctionMode):
    """Records the tensors read by the host (the methods in ``READS``)."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[tuple[str, torch.Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS and args and isinstance(args[0], torch.Tensor):
            self.read.append((name, args[0]))
        return func(*args, **(kwargs or {}))


class Net(nn.Module):
    def __init__(self, num_tasks: int = T) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(num_tasks))

    def losses(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x)
        return [(head(h) - i).pow(2).mean() + 0.1 for i, head in enumerate(self.heads)]


def make_weighting(name: str, net: Net):
    if name == "gradnorm":  # its default needs the last shared layer
        return awloss.GradNorm(T, shared=net.trunk[0])
    return awloss.get_class(name)._make_example(T)


def weighting_step(w, net: Net, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    losses = net.losses(x)
    total = w(losses)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    w.update(torch.stack([v.detach() for v in losses]))


def aggregator_step(agg, net: Net, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    awloss.backward(net.losses(x), net.trunk.parameters(), agg)
    opt.step()


def optimizer(net: Net, w=None) -> torch.optim.Optimizer:
    groups = [{"params": list(net.parameters())}]
    if w is not None:
        groups += w.param_groups(lr=0.01)
    return torch.optim.SGD(groups, lr=0.01)


def assert_reads_only_earlier_flags(step, module) -> None:
    with _checks.strict_host_reads():
        for _ in range(3):  # the first calls differ (lazy state, initial losses)
            step()
        earlier = {id(f) for f in _checks.pending_flags(module)}
        with HostReads() as counter:
            step()
    names = [name for name, _ in counter.read]
    assert len(counter.read) <= 1, f"{type(module).__name__}: {len(counter.read)} host reads in a step: {names}"
    for name, t in counter.read:
        assert id(t) in earlier, f"{type(module).__name__}: {name}() of a value of the current step"


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_a_default_weighting_step_reads_at_most_an_earlier_flag(name):
    net = Net()
    w = make_weighting(name, net)
    opt = optimizer(net, w)
    x = torch.randn(16, 4)
    assert_reads_only_earlier_flags(lambda: weighting_step(w, net, opt, x), w)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_a_default_aggregator_step_reads_at_most_an_earlier_flag(name):
    net = Net()
    agg = awloss.get_class(name)._make_example(T)
    opt = optimizer(net)
    x = torch.randn(16, 4)
    assert_reads_only_earlier_flags(lambda: aggregator_step(agg, net, opt, x), agg)


def on_meta(build):
    """The module built under ``torch.device("meta")`` and, separately, built on the CPU then moved."""
    with torch.device("meta"):
        a = build()
    b = build().to("meta")
    return a, b


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_every_weighting_runs_a_default_step_on_meta(name):
    for net, w in zip(on_meta(Net), on_meta(lambda: make_weighting(name, Net()))):
        if name == "gradnorm":
            w = awloss.GradNorm(T, shared=net.trunk[0]).to("meta")
        for p in [*w.parameters(), *w.buffers()]:
            assert p.device.type == "meta" or not p.is_floating_point()  # RLW's generator state: CPU bytes
        x = torch.randn(16, 4, device="meta")
        opt = optimizer(net, w)
        for _ in range(2):
            weighting_step(w, net, opt, x)
        assert w.weights.device.type == "meta"


@pytest.mark.parametrize("name", AGGREGATORS)
def test_every_aggregator_runs_a_default_backward_on_meta(name):
    for net, agg in zip(on_meta(Net), on_meta(lambda: awloss.get_class(name)._make_example(T))):
        x = torch.randn(16, 4, device="meta")
        opt = optimizer(net)
        for _ in range(2):
            aggregator_step(agg, net, opt, x)
        assert all(p.grad is not None and p.grad.device.type == "meta" for p in net.trunk.parameters())
        out = agg(torch.randn(T, 5, device="meta"))  # the direct call too
        assert out.shape == (5,) and out.device.type == "meta"


BAD = {"nan": [1.0, float("nan"), 2.0], "inf": [float("inf"), 1.0, 2.0], "-inf": [1.0, 2.0, float("-inf")],
       "negative": [1.0, 2.0, -0.5], "zero": [1.0, 0.0, 2.0]}


@pytest.mark.parametrize("name", WEIGHTINGS)
@pytest.mark.parametrize("read", ["next call", "weights", "verify"])
def test_the_deferred_check_gives_the_immediate_error_one_call_late(name, read):
    net = Net()
    good = [torch.tensor(v) for v in (1.0, 2.0, 3.0)]
    for kind, values in BAD.items():
        ref = make_weighting(name, net)
        ref.check = "immediate"
        try:
            ref([torch.tensor(v) for v in values])
        except ValueError as e:
            expected = str(e)
        else:
            assert kind in ("negative", "zero"), f"{name}: a {kind} loss passed the immediate check"
            continue
        w = make_weighting(name, net)
        assert w.check == "deferred"
        w(good)
        w([torch.tensor(v) for v in values])  # no host read: nothing raised yet
        with pytest.raises(ValueError) as late:
            if read == "next call":
                w(good)
            elif read == "weights":
                w.weights
            else:
                w.verify()
        assert str(late.value) == expected, kind
        assert any("one call late" in n for n in getattr(late.value, "__notes__", []))
        w.reset()
        w(good)  # reported once, then forgotten
        w.verify()


@pytest.mark.parametrize("name", AGGREGATORS)
def test_the_deferred_aggregator_check_names_the_task_one_call_late(name):
    J = torch.randn(3, 6)
    bad = J.clone()
    bad[2, 1] = float("inf")
    agg = awloss.get_class(name)._make_example(3)
    agg(J)
    agg(bad)
    with pytest.raises(ValueError, match=r"task 2 \(row 2"):
        agg(J)
    agg.reset()  # the inf reached a stateful method's state (as it did before the check raised)
    agg(J)
    agg.verify()
    net = Net()
    losses = net.losses(torch.randn(8, 4))
    losses[1] = losses[1] * float("nan")
    awloss.backward(losses, net.trunk.parameters(), agg)
    with pytest.raises(ValueError, match=r"`losses\[1\]` must be finite"):
        agg.verify()


def test_check_modes_are_validated_and_off_means_off():
    w = awloss.get("sum")
    w.check = "sometimes"
    with pytest.raises(ValueError, match="'deferred', 'immediate' or False, got 'sometimes'"):
        w(torch.tensor(1.0), torch.tensor(2.0))
    w.check = False
    w(torch.tensor(1.0), torch.tensor(float("nan")))
    w.verify()
    assert _checks.pending_flags(w) == []


def test_pending_flags_are_not_pickled_or_copied():
    import copy
    import pickle

    w = awloss.get("uw", num_tasks=2)
    w(torch.tensor(1.0), torch.tensor(float("nan")))
    for clone in (copy.deepcopy(w), pickle.loads(pickle.dumps(w))):
        clone(torch.tensor(1.0), torch.tensor(2.0))  # the copy starts with no pending check
        clone.verify()
    with pytest.raises(ValueError, match="must be finite"):
        w.verify()
