"""Absent (``None``) and exactly-zero losses, for every registered weighting (issue 11 §2).

The rule: a task given as ``None`` is left out of the method's normalisation and state, its weight is
reported as 0, and the other tasks behave as if ``T - 1`` tasks were given. A loss of exactly 0 either
raises a clear error naming it (methods that take ``log L`` or ``1/L``, documented) or gives finite
weights where the other tasks keep a usable weight (no collapse onto the zero task).
"""

from __future__ import annotations

import pytest
import torch

import awloss
from awloss.weighting import Weighting

WEIGHTINGS = awloss.available("weighting")
DTYPES = [torch.float32, torch.float64]


def make(name: str, num_tasks: int, dtype: torch.dtype = torch.float32) -> Weighting:
    return awloss.get_class(name)._make_example(num_tasks).to(dtype)


def values(num_tasks: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(num_tasks, generator=g, dtype=torch.float64).mul(3).add(0.2).to(dtype)


def call(w: Weighting, vals: torch.Tensor, absent: set[int] = frozenset(), zero: set[int] = frozenset()):
    """Call ``w`` with fresh leaves; task i is None if in ``absent``, an exact 0 if in ``zero``."""
    leaves = [
        torch.tensor(0.0 if i in zero else float(v), dtype=vals.dtype, requires_grad=True) for i, v in enumerate(vals)
    ]
    out = w([None if i in absent else x for i, x in enumerate(leaves)])
    return out, leaves


def present_grads(out, leaves, absent):
    keep = [x for i, x in enumerate(leaves) if i not in absent]
    grads = torch.autograd.grad(out, keep, allow_unused=True)
    return torch.stack([torch.zeros((), dtype=x.dtype) if g is None else g for g, x in zip(grads, keep)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("name", WEIGHTINGS)
def test_absent_task_weighs_zero_and_others_as_if_t_minus_1(name, num_tasks, dtype):
    absent = {1}
    vals = values(num_tasks, dtype)
    torch.manual_seed(0)
    w = make(name, num_tasks, dtype)
    out, leaves = call(w, vals, absent)
    assert torch.isfinite(out), f"{name}: objective {out} with a task absent"
    weights = w.weights
    assert weights.shape == (num_tasks,) and bool(torch.isfinite(weights).all()), f"{name}: {weights}"
    assert weights[1] == 0, f"{name}: the absent task is reported with weight {float(weights[1])}, not 0"
    keep = [i for i in range(num_tasks) if i not in absent]
    grads = present_grads(out, leaves, absent)
    torch.testing.assert_close(grads, weights[keep], rtol=1e-5, atol=1e-6, msg=f"{name}: weights != gradient")
    if w.permutation_equivariant:  # the same method built for T - 1 tasks gives the same weights
        torch.manual_seed(0)
        ref = make(name, num_tasks - 1, dtype)
        out_ref = ref(vals[keep])
        torch.testing.assert_close(weights[keep], ref.weights, rtol=1e-5, atol=1e-7, msg=f"{name}: not as for T-1")
        torch.testing.assert_close(out.detach(), out_ref.detach(), rtol=1e-5, atol=1e-6)
    else:  # at least the present weights are finite and not all 0
        assert bool((weights[keep] > 0).any()), f"{name}: every present task has weight 0: {weights}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", WEIGHTINGS)
def test_absent_task_over_training_is_as_if_t_minus_1(name, dtype):
    """Thirty steps with every hook (update, step), task 1 absent throughout: the other tasks' weights
    follow the same method built for T - 1 tasks, step by step, and the state stays finite."""
    T, absent, keep = 3, {1}, [0, 2]
    torch.manual_seed(0)
    w = make(name, T, dtype)
    torch.manual_seed(0)
    ref = make(name, T - 1, dtype)
    for step in range(30):
        vals = values(T, dtype, seed=step)
        out, leaves = call(w, vals, absent)
        out_ref = ref(vals[keep].clone().requires_grad_(True))
        for m, o in ((w, out), (ref, out_ref)):
            for p in m.parameters():  # a plain SGD step on the method's own parameters, if any
                if p.requires_grad:
                    (g,) = torch.autograd.grad(o, p, retain_graph=True)
                    with torch.no_grad():
                        p.sub_(0.05 * g)
        new = values(T, dtype, seed=1000 + step)
        w.update([None if i in absent else new[i] for i in range(T)])
        ref.update(new[keep])
        if step % 5 == 4:
            w.step()
            ref.step()
        assert bool(torch.isfinite(w.weights).all()) and w.weights[1] == 0, f"{name}@{step}: {w.weights}"
        for b in w.buffers():
            if b.is_floating_point():
                assert bool(torch.isfinite(b).all()), f"{name}@{step}: a non-finite buffer {b}"
        if w.permutation_equivariant:
            torch.testing.assert_close(w.weights[keep], ref.weights, rtol=1e-4, atol=1e-6, msg=f"{name}@{step}")


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_every_task_absent_gives_zero(name):
    w = make(name, 2)
    out = w(None, None)
    assert float(out) == 0.0
    assert w.weights.tolist() == [0.0, 0.0]


def _raises_naming_zero_loss(name, dtype, T, zero):
    w = make(name, T, dtype)
    try:
        out, leaves = call(w, values(T, dtype), zero=zero)
        w.verify()  # the value check is deferred (issue 13): its error comes at the next read, here
    except ValueError as e:  # a documented guard: the method takes log L or 1/L
        assert "losses[" in str(e) and "0.0" in str(e), f"{name}: unclear error {e}"
        assert w.requires_nonnegative, f"{name}: refuses a zero loss but does not declare it needs losses > 0"
        return None
    return w, out, leaves


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", WEIGHTINGS)
def test_zero_loss_is_finite_and_does_not_collapse_the_others(name, dtype):
    T, zero = 3, {1}
    got = _raises_naming_zero_loss(name, dtype, T, zero)
    if got is None:
        return
    w, out, leaves = got
    weights = w.weights
    assert torch.isfinite(out) and bool(torch.isfinite(weights).all()), f"{name}: {out}, {weights}"
    grads = torch.stack(torch.autograd.grad(out, leaves, allow_unused=False))
    torch.testing.assert_close(grads, weights, rtol=1e-5, atol=1e-6, msg=f"{name}: weights != gradient")
    others = weights[[0, 2]].abs().max()
    assert others >= 1e-3 * weights.abs().max(), f"{name}: the non-zero tasks collapsed: {weights.tolist()}"


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_zero_loss_over_training_keeps_weights_finite_and_alive(name):
    """Forty steps with every hook and task 1 at exactly 0 (its leaf has no gradient): no collapse."""
    T = 3
    torch.manual_seed(0)
    w = make(name, T)
    if w.requires_nonnegative and _raises_naming_zero_loss(name, torch.float32, T, {1}) is None:
        return
    for step in range(40):
        out, leaves = call(w, values(T, torch.float32, seed=step), zero={1})
        for p in w.parameters():
            if p.requires_grad:
                (g,) = torch.autograd.grad(out, p, retain_graph=True)
                with torch.no_grad():
                    p.sub_(0.05 * g)
        new = values(T, torch.float32, seed=500 + step)
        new[1] = 0.0
        w.update(new)
        if step % 5 == 4:
            w.step()
        weights = w.weights
        assert bool(torch.isfinite(weights).all()), f"{name}@{step}: {weights}"
        assert weights[[0, 2]].abs().max() >= 1e-3 * weights.abs().max(), f"{name}@{step}: collapsed {weights}"


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_a_detached_loss_among_grad_losses_warns_naming_it(name):
    """Issue 11 §6: a `.detach()`ed loss trains nothing; it was accepted silently (numbers are refused)."""
    w = make(name, 3)
    a, c = torch.tensor(1.0, requires_grad=True), torch.tensor(2.0, requires_grad=True)
    with pytest.warns(UserWarning, match=r"Loss `b` does not require grad"):
        w({"a": a, "b": torch.tensor(1.5), "c": c})
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*does not require grad")
        w({"a": a, "b": None, "c": c})  # None is the way to say "absent"
        with torch.no_grad():
            w({"a": a, "b": torch.tensor(1.5), "c": c})  # evaluation: nothing trains anyway
