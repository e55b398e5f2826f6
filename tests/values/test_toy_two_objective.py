"""The two-objective toy of CAGrad, Nash-MTL and FAMO (issue 11 §7), run through every method.

The problem (Liu et al., "Conflict-Averse Gradient Descent", NeurIPS 2021, App.; reused by Navon et al.,
"Multi-Task Learning as a Bargaining Game", ICML 2022, Fig. 2, and Liu et al., "FAMO", NeurIPS 2023, Fig. 2)
has x ∈ R² and, with c₁ = max(tanh(x₂/2), 0), c₂ = max(tanh(−x₂/2), 0) and a floor ε = 5e-6 on the logs:

    f₁ = c₁·(log max(|−(x₁+7)/2 − tanh(−x₂)|, ε) + 6) + c₂·(((x₁−7)² + 0.1(x₂+8)²)/10 − 20)
    f₂ = c₁·(log max(|(3−x₁)/2 + tanh(−x₂) + 2|, ε) + 6) + c₂·(((x₁+7)² + 0.1(x₂+8)²)/10 − 20)

The formulas are read from the authors' scripts (github.com/Cranial-XIX/CAGrad ``toy.py``, commit dc3d481;
github.com/AvivNavon/nash-mtl ``experiments/toy``, commit cce1840; github.com/Cranial-XIX/FAMO
``experiments/toy``, commit 0a6ad06) and written here afresh. The Nash-MTL / FAMO protocol: the losses are
L = (0.1·f₁, f₂), Adam with lr 1e-3 on x, 35,000 steps, from the five starts below; FAMO's script gives
it the lower bounds (−21·0.1, −21) and γ = 0. The Pareto set lies near x₂ ≈ −8.36, x₁ ∈ [−7, 7].

"On the front" is measured by Pareto stationarity: s(x) = min over α ∈ [0, 1] of ‖α u₁ + (1−α) u₂‖ with
uᵢ = ∇fᵢ/‖∇fᵢ‖ (0 exactly at a Pareto-stationary point, scale free, so the same for L), required below
``ON_FRONT`` together with x₂ < 0 (the quadratic half-plane; above it the log terms' narrow grooves, where
descent stalls, and their floor ε, which zeroes a gradient, are far from the front). Measured (float64): FAMO ends at s ≤ 1.1e-4 from all
five starts, x ≈ (−1.2…2.1, −8.36); LS stays at s = 0.82 from (9, 9), x ≈ (5.0, 4.0) (the papers' "LS gets
stuck"); the two-task min-norm formula (MGDA, Sener & Koltun 2018) in closed form reaches the front from all
five (s ≤ 2.2e-6), at x₁ = −2.0, 6.1, 7.0, −4.3, 7.0 (near the ends, as the papers draw it).

Default suite: every aggregator of the registry and the loss weightings that apply to negative losses run
``FAST_STEPS`` steps from one start, without an error and with finite updates. Slow suite: the papers'
claims for LS, MGDA and FAMO at the full protocol, and every method from all five starts for ``SWEEP_STEPS``
steps (35,000 for every aggregator costs about two hours of CPU: each start needs its own stateful instance and
one call per step; ``AWLOSS_TOY_STEPS=35000`` runs the full protocol).
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import awloss
from awloss.aggregation import Aggregator

STARTS = torch.tensor([[-8.5, 7.5], [0.0, 0.0], [9.0, 9.0], [-7.5, -0.5], [9.0, -1.0]], dtype=torch.float64)
LOSS_SCALE = torch.tensor([0.1, 1.0], dtype=torch.float64)
BOUNDS = torch.tensor([-2.1, -21.0], dtype=torch.float64)  # FAMO's min_losses in its toy script
STEPS, FAST_STEPS = 35_000, 300
SWEEP_STEPS = int(os.environ.get("AWLOSS_TOY_STEPS", "1000"))
ON_FRONT = 1e-3
AGGREGATORS = awloss.available("aggregator")
# Loss weightings defined for negative losses (the toy's reach −20); the others take log L or 1/L.
WEIGHTINGS = ["sum", "mean", "rlw", "famo"]


def toy(x: torch.Tensor) -> torch.Tensor:
    """``[f₁, f₂]`` for each row of ``x[..., 2]`` (the formulas of the module docstring)."""
    x1, x2 = x[..., 0], x[..., 1]
    eps = 5e-6
    log1 = torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), eps).log() + 6
    log2 = torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), eps).log() + 6
    sq1 = ((x1 - 7).pow(2) + 0.1 * (x2 + 8).pow(2)) / 10 - 20
    sq2 = ((x1 + 7).pow(2) + 0.1 * (x2 + 8).pow(2)) / 10 - 20
    c1, c2 = torch.tanh(x2 / 2).clamp_min(0), torch.tanh(-x2 / 2).clamp_min(0)
    return torch.stack([c1 * log1 + c2 * sq1, c1 * log2 + c2 * sq2], dim=-1)


def losses(x: torch.Tensor) -> torch.Tensor:
    return toy(x) * LOSS_SCALE


def jacobians(x: torch.Tensor, transform=None) -> torch.Tensor:
    """``J[S, 2, 2]``: each start's Jacobian of ``transform(L − bounds)`` (the starts are independent)."""
    x = x.detach().requires_grad_(True)
    L = losses(x) - BOUNDS  # > 0: DB-MTL's log transform is defined; the others' gradients are unchanged
    if transform is not None:
        L = torch.stack([transform(row) for row in L])
    rows = [torch.autograd.grad(L[:, k].sum(), x, retain_graph=k == 0)[0] for k in range(2)]
    return torch.stack(rows, dim=1)


def stationarity(x: torch.Tensor) -> torch.Tensor:
    """s(x) of the module docstring, per start: 0 at a Pareto-stationary point, at most 1."""
    J = jacobians(x)
    u = J / J.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    d = u[:, 0] - u[:, 1]
    a = (-(u[:, 1] * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-300)).clamp(0, 1)
    return (a[:, None] * u[:, 0] + (1 - a[:, None]) * u[:, 1]).norm(dim=-1)


def run_aggregator(name: str, steps: int, starts: torch.Tensor = STARTS) -> torch.Tensor:
    """Adam on every start at once (Adam is elementwise), one aggregator instance per start."""
    torch.manual_seed(0)
    aggs = [awloss.get_class(name)._make_example(2) for _ in range(len(starts))]
    transform = aggs[0].transform_losses if type(aggs[0]).transform_losses is not Aggregator.transform_losses else None
    x = starts.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", awloss.aggregation.SolverFallbackWarning)  # counted, not an error
        for step in range(steps):
            J = jacobians(x, transform)
            x.grad = torch.stack([agg(J[s]) for s, agg in enumerate(aggs)])
            if step % 500 == 0:
                assert bool(torch.isfinite(x.grad).all()), f"{name}@{step}: update {x.grad}"
            opt.step()
        for agg in aggs:
            agg.verify()
    assert bool(torch.isfinite(x).all()), f"{name}: {x}"
    return x.detach()


def _weighting(name: str):
    if name == "famo":
        return awloss.FAMO(2, min_losses=BOUNDS.tolist(), gamma=0.0)  # the official toy script's settings
    return awloss.get(name, num_tasks=2)


def run_weighting(name: str, steps: int, starts: torch.Tensor = STARTS) -> torch.Tensor:
    torch.manual_seed(0)
    ws = [_weighting(name) for _ in range(len(starts))]
    x = starts.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-3)
    for step in range(steps):
        L = losses(x)
        total = sum(w(L[s]) for s, w in enumerate(ws))
        opt.zero_grad()
        total.backward()
        if step % 500 == 0:
            assert bool(torch.isfinite(x.grad).all()), f"{name}@{step}: gradient {x.grad}"
        opt.step()
        if name == "famo":
            with torch.no_grad():
                after = losses(x)
            for s, w in enumerate(ws):
                w.update(after[s])
    assert bool(torch.isfinite(x).all()), f"{name}: {x}"
    for w in ws:
        assert bool(torch.isfinite(w.weights).all()), f"{name}: weights {w.weights}"
    return x.detach()


def test_the_toy_is_the_papers():
    """Values read off the authors' formulas by hand: at (0, −8) c₁ = 0, c₂ = tanh 4 and the brackets are
    4.9 − 20; the Pareto set's middle (0, −8.3552, the papers' plotted front) is Pareto stationary."""
    c2 = torch.tanh(torch.tensor(4.0, dtype=torch.float64))
    torch.testing.assert_close(toy(torch.tensor([0.0, -8.0]).double()), c2 * torch.tensor([-15.1, -15.1]).double())
    s = stationarity(torch.tensor([[0.0, -8.3552], [0.0, 0.5], [5.0, 4.0]], dtype=torch.float64))
    assert float(s[0]) < 1e-4 and float(s[1]) > 0.5


@pytest.mark.parametrize("name", AGGREGATORS)
def test_every_aggregator_runs_the_toy(name):
    run_aggregator(name, FAST_STEPS, STARTS[1:2])


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_every_weighting_runs_the_toy(name):
    run_weighting(name, FAST_STEPS, STARTS[1:2])


@pytest.mark.slow
@pytest.mark.parametrize("name", AGGREGATORS + [f"weighting:{w}" for w in WEIGHTINGS])
def test_every_method_runs_the_five_starts(name):
    if name.startswith("weighting:"):
        run_weighting(name.split(":")[1], SWEEP_STEPS)
    else:
        run_aggregator(name, SWEEP_STEPS)


@pytest.mark.slow
def test_ls_is_stuck_from_9_9():
    x = run_weighting("sum", STEPS)
    s = stationarity(x)
    assert float(x[2, 1]) > 0 and float(s[2]) > 0.5, (x[2], s[2])  # (9, 9): stuck above the crease
    for i in (1, 3, 4):
        assert float(x[i, 1]) < -8 and float(s[i]) < ON_FRONT, (i, x[i], s[i])


@pytest.mark.slow
def test_famo_reaches_the_front_from_all_five_starts():
    x = run_weighting("famo", STEPS)
    s = stationarity(x)
    assert bool((x[:, 1] < -8).all()) and bool((s < ON_FRONT).all()), (x, s)
    assert bool((x[:, 0].abs() < 3).all()), x  # balanced: near the middle of the front, not at an end


@pytest.mark.slow
def test_mgda_reaches_the_front_from_all_five_starts():
    x = run_aggregator("mgda", STEPS)
    s = stationarity(x)
    assert bool((x[:, 1] < -8).all()) and bool((s < ON_FRONT).all()), (x, s)
