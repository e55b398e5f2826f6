"""Long runs of every stateful weighting on hostile loss streams (issue 11 §7).

Four tasks: task 0 falls and then sits at exactly 0, task 1 is absent (``None``) every other step, tasks 2
and 3 live at 1e-8 and 1e8. Every lifecycle hook runs (the method's own parameters under Adam,
``update`` after each step, ``step`` every 100 calls). The weights and the state must stay finite, the
absent task must weigh 0, every present task with a loss > 0 must keep a weight > 0, and the methods'
own normalised state must not collapse. 300 steps in the default suite, 10,000 in the slow one.
"""

from __future__ import annotations

import math

import pytest
import torch

import awloss

WEIGHTINGS = awloss.available("weighting")
T = 4
SCALES = (1.0, 1.0, 1e-8, 1e8)


def _instance(name: str):
    if name == "gradnorm":
        trunk = torch.nn.Linear(3, T)
        return awloss.GradNorm(T, shared=trunk), trunk
    if name == "stch_warmup":
        return awloss.STCH(T, warmup_epochs=2), None
    return awloss.get_class(name)._make_example(T), None


def _stateful() -> list[str]:
    names = []
    for n in WEIGHTINGS:
        w = _instance(n)[0]
        if w.stateful or w.learnable:
            names.append(n)
    return names + ["stch_warmup"]


STATEFUL = _stateful()


def _losses(step: int, trunk, x, floor: float):
    """The task losses of ``step`` (tensors requiring grad, or None) and whether task 1 is absent."""
    zero = step >= 50
    if trunk is None:
        vals = [
            floor if zero else 1.0 - step / 60,
            1.0 + 0.5 * math.sin(step / 7),
            SCALES[2] * (1 + 0.3 * math.sin(step / 5)),
            SCALES[3] * (1 + 0.3 * math.cos(step / 11)),
        ]
        losses = [torch.tensor(v, requires_grad=True) for v in vals]
    else:
        y = trunk(x)
        targets = torch.tensor([0.0, 1.0, -1.0, 2.0])
        sq = (y - targets).pow(2).mean(0) * (1 + 0.3 * math.sin(step / 5))
        losses = [sq[0] * (0.0 if zero else 1.0), sq[1], SCALES[2] * sq[2], SCALES[3] * sq[3]]
    absent = step % 2 == 1
    return [None if (absent and i == 1) else l for i, l in enumerate(losses)], absent


def _run(name: str, steps: int) -> None:
    torch.manual_seed(0)
    w, trunk = _instance(name)
    x = torch.randn(16, 3)
    groups = w.param_groups(lr=0.025)
    opt = torch.optim.Adam(groups) if groups else None
    floor = 1e-30 if name == "stch_warmup" else 0.0  # its warm-up takes log L and refuses 0 (documented)
    for step in range(steps):
        losses, absent = _losses(step, trunk, x, floor)
        out = w(losses)
        if opt is not None:
            opt.zero_grad()
            out.backward()
            opt.step()
        w.update([None if l is None else l.detach() * 0.999 for l in losses])
        if step % 100 == 99:
            w.step()
        if step % 250 == 0 or step == steps - 1:
            weights = w.weights
            assert torch.isfinite(out), f"{name}@{step}: objective {out}"
            assert bool(torch.isfinite(weights).all()), f"{name}@{step}: weights {weights}"
            if absent:
                assert weights[1] == 0, f"{name}@{step}: the absent task weighs {weights[1]}"
            for i in (2, 3) + (() if absent else (1,)):
                assert weights[i] > 0, f"{name}@{step}: task {i} (loss > 0) lost its weight: {weights.tolist()}"
            for t in [*w.parameters(), *w.buffers()]:
                if t.is_floating_point():
                    assert bool(torch.isfinite(t).all()), f"{name}@{step}: non-finite state {t}"
            _no_collapse(name, w, step)


def _no_collapse(name, w, step):
    if name == "famo":  # the softmax weights z of the logits (the normalised state), and the weights' sum
        z = torch.softmax(w.logits, 0)
        assert float(z.min()) > 1e-3, f"famo@{step}: z collapsed {z.tolist()}"
        live = float(w.weights[1:].sum())  # weights sum to 1; task 0 sits at 0 and must not take it all
        assert live == pytest.approx(1.0, rel=1e-4), f"famo@{step}: the tasks with a loss > 0 weigh {live}"
    elif name == "gradnorm":  # a weight at its 1e-6 floor belongs to a task too strong, never a starved one
        low = w.task_weights <= 1e-5
        assert bool((w.grad_norms[low] >= w.targets[low]).all()), f"gradnorm@{step}: {w.task_weights.tolist()}"
        assert float(w.task_weights[:3].min()) > 1e-3, f"gradnorm@{step}: {w.task_weights.tolist()}"
    elif name == "dwa":
        assert float(w.current.min()) > 1e-3, f"dwa@{step}: {w.current.tolist()}"


@pytest.mark.parametrize("name", STATEFUL)
def test_300_steps_with_zero_absent_and_extreme_losses(name):
    _run(name, 300)


@pytest.mark.slow
@pytest.mark.parametrize("name", STATEFUL)
def test_10000_steps_with_zero_absent_and_extreme_losses(name):
    _run(name, 10_000)
