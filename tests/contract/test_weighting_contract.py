"""The contract every loss-level method honours; a new registered method joins automatically."""

from __future__ import annotations

import copy

import pytest
import torch

import awloss
from awloss.weighting import Weighting

WEIGHTINGS = awloss.available("weighting")
NUM_TASKS = [1, 2, 5]


def make(name: str, num_tasks: int) -> Weighting:
    return awloss.get_class(name)._make_example(num_tasks)


def losses_for(num_tasks: int, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(num_tasks, dtype=dtype) * 3 + 0.1).requires_grad_(True)


def train_a_little(w: Weighting, *, steps: int, lr: float, epoch_every: int) -> None:
    """A few optimiser steps with every lifecycle hook: `update` after each step, `step` at "epoch" ends."""
    opt = torch.optim.SGD(w.param_groups(lr=lr), lr=lr) if w.param_groups() else None
    for i in range(1, steps + 1):
        losses = losses_for(w.num_tasks)
        out = w(losses)
        if opt is not None:
            opt.zero_grad()
            out.backward()
            opt.step()
        w.update(losses.detach())
        if i % epoch_every == 0:
            w.step()


def test_registry_is_not_empty_and_holds_the_core():
    assert {"uw", "awl"} <= set(WEIGHTINGS)
    for name in WEIGHTINGS:
        cls = awloss.get_class(name)
        assert issubclass(cls, Weighting) and cls.kind == "weighting"
        assert cls.__doc__ and "Example" in cls.__doc__ and "References" in cls.__doc__


@pytest.mark.parametrize("num_tasks", NUM_TASKS)
@pytest.mark.parametrize("name", WEIGHTINGS)
def test_finite_scalar_and_weights_are_the_gradient(name, num_tasks):
    w = make(name, num_tasks)
    losses = losses_for(num_tasks)
    out = w(losses)
    assert out.dim() == 0 and torch.isfinite(out)
    (grad,) = torch.autograd.grad(out, losses)
    assert w.weights.shape == (num_tasks,)
    assert not w.weights.requires_grad
    torch.testing.assert_close(grad, w.weights, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_input_forms_agree(name):
    values = [0.7, 1.9, 0.3]
    names = ["seg", "depth", "normal"]
    results = {}
    for form in ("varargs", "list", "tuple", "tensor", "dict", "dict_reordered"):
        torch.manual_seed(1)
        w = make(name, 3)
        ls = [torch.tensor(v, requires_grad=True) for v in values]
        if form == "varargs":
            out = w(*ls)
        elif form == "list":
            out = w(ls)
        elif form == "tuple":
            out = w(tuple(ls))
        elif form == "tensor":
            out = w(torch.stack(ls))
        elif form == "dict":
            out = w(dict(zip(names, ls)))
        else:  # a mapping in another order is read by name, not by position
            w._task_names = tuple(names)
            out = w({n: l for n, l in reversed(list(zip(names, ls)))})
        grads = torch.autograd.grad(out, ls)
        results[form] = (out.detach(), w.weights.clone(), torch.stack(grads))
    ref = results["varargs"]
    for form, got in results.items():
        for a, b in zip(ref, got):
            torch.testing.assert_close(a, b, msg=f"{name}: form {form!r} disagrees with varargs")


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_dict_sets_task_names(name):
    w = make(name, 2)
    w({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    assert w.task_names == ("a", "b")
    assert set(w.weights_dict()) == {"a", "b"}


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_state_dict_round_trip_and_training(name):
    torch.manual_seed(0)
    w = make(name, 3)
    train_a_little(w, steps=4, lr=0.1, epoch_every=2)  # move the state away from init
    state = copy.deepcopy(w.state_dict())
    fresh = make(name, 3)
    fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=f"{name}: state {k!r} not restored")
    probe = losses_for(3).detach()
    torch.manual_seed(5)
    a = w(probe)
    torch.manual_seed(5)
    b = fresh(probe)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(w.weights, fresh.weights)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", WEIGHTINGS)
def test_dtype_and_device_kept(name, dtype):
    w = make(name, 2).to(dtype)
    losses = losses_for(2, dtype)
    out = w(losses)
    assert out.dtype == dtype and out.device == losses.device
    assert w.weights.dtype == dtype and w.weights.device == losses.device


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_float64_losses_with_float32_module_give_float64(name):
    w = make(name, 2)
    out = w(losses_for(2, torch.float64))
    assert out.dtype == torch.float64


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_reset_restores_initial_state(name):
    torch.manual_seed(0)
    w = make(name, 3)
    init = copy.deepcopy(w.state_dict())
    train_a_little(w, steps=3, lr=0.5, epoch_every=1)
    w.reset()
    for k, v in w.state_dict().items():
        torch.testing.assert_close(v, init[k], msg=f"{name}: reset() left {k!r} changed")


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_bad_inputs_raise_clear_errors(name):
    w = make(name, 2)
    with pytest.raises(ValueError, match="No losses"):
        w()
    with pytest.raises(ValueError, match="Expected 2 losses"):
        w(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0))
    with pytest.raises(ValueError, match=r"`losses\[1\]` must be finite, got nan"):
        w(torch.tensor(1.0), torch.tensor(float("nan")))
        w.verify()  # deferred: the flag of the call is read here (or at the next call)
    with pytest.raises(ValueError, match=r"`b` must be finite, got inf"):
        w({"a": torch.tensor(1.0), "b": torch.tensor(float("inf"))})
        w.verify()
    with pytest.raises(ValueError, match=r"must be a scalar tensor, got shape \(3,\)"):
        w(torch.ones(3), torch.tensor(1.0))
    with pytest.raises(TypeError, match="Python number"):
        w(torch.tensor(1.0), 2.0)
    assert torch.isfinite(make(name, 2)(1, 2))  # all numbers: the seed's `awl(1, 2)`


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_metadata_is_consistent(name):
    w = make(name, 2)
    has_params = any(p.requires_grad for p in w.parameters())
    assert w.learnable == has_params, f"{name}: learnable={w.learnable} but has parameters={has_params}"
    if not w.learnable:
        assert w.param_groups() == []
    if w.learnable or w.stateful:
        assert w.stateful or w.learnable
