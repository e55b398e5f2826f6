"""Uncertainty weighting (Kendall / Liebel) and the seed's AutomaticWeightedLoss: maths, guards, API."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import awloss
from awloss import AutomaticWeightedLoss, UncertaintyWeighting


@pytest.fixture(autouse=True)
def _immediate_checks(monkeypatch):
    """The messages here are checked within the call; the deferred mode (the default, the same message one
    call late) is checked for every method in tests/contract/test_deferred_checks.py."""
    monkeypatch.setattr(awloss.Weighting, "check", "immediate")


class SeedAWL(nn.Module):
    """Independent oracle: the seed's formula, written out as its README describes it."""

    def __init__(self, num=2):
        super().__init__()
        self.params = nn.Parameter(torch.ones(num))

    def forward(self, *x):
        loss_sum = 0
        for i, loss in enumerate(x):
            loss_sum += 0.5 / (self.params[i] ** 2) * loss + torch.log(1 + self.params[i] ** 2)
        return loss_sum


def adam_to_equilibrium(weighting, losses, steps=3000, lr=0.05):
    opt = torch.optim.Adam(weighting.param_groups(lr=lr))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=steps // 3, gamma=0.2)
    for _ in range(steps):
        out = weighting(losses)
        opt.zero_grad()
        out.backward()
        opt.step()
        sched.step()
    return weighting


# --------------------------------------------------------------------------- seed equivalence
@pytest.mark.parametrize("sigma", [[1.0, 1.0], [0.3, 2.5], [4.0, 0.7]])
def test_matches_seed_formula_in_value_and_gradient(sigma):
    L = torch.tensor([0.8, 13.0], requires_grad=True)
    seed = SeedAWL(2)
    awl = AutomaticWeightedLoss(2)
    with torch.no_grad():
        seed.params.copy_(torch.tensor(sigma))
        awl.log_var.copy_(torch.log(torch.tensor(sigma) ** 2))
    a, b = seed(L[0], L[1]), awl(L[0], L[1])
    torch.testing.assert_close(a, b)
    ga_L, ga_p = torch.autograd.grad(a, [L, seed.params])
    gb_L, gb_s = torch.autograd.grad(b, [L, awl.log_var])
    torch.testing.assert_close(ga_L, gb_L)
    torch.testing.assert_close(awl.weights, gb_L)
    # chain rule: ∂/∂s = ∂/∂σ · dσ/ds with σ = exp(s/2)
    torch.testing.assert_close(gb_s, ga_p * torch.tensor(sigma) / 2)
    torch.testing.assert_close(awl.sigma, torch.tensor(sigma))


def test_sigma_parameterization_reproduces_seed_updates_bit_for_bit():
    torch.manual_seed(0)
    net_a = nn.Linear(4, 2)
    net_b = nn.Linear(4, 2)
    net_b.load_state_dict(net_a.state_dict())
    seed, awl = SeedAWL(2), AutomaticWeightedLoss(2, parameterization="sigma")
    opt_a = torch.optim.Adam([{"params": net_a.parameters()}, {"params": seed.parameters(), "weight_decay": 0}])
    opt_b = torch.optim.Adam([{"params": net_b.parameters()}, {"params": awl.parameters(), "weight_decay": 0}])
    for _ in range(200):
        x, y = torch.randn(16, 4), torch.randn(16, 2) * torch.tensor([1.0, 5.0])
        for net, w, opt in ((net_a, seed, opt_a), (net_b, awl, opt_b)):
            err = (net(x) - y) ** 2
            total = w(err[:, 0].mean(), err[:, 1].mean())
            opt.zero_grad()
            total.backward()
            opt.step()
        assert torch.equal(seed.params, awl.params)
        assert all(torch.equal(p, q) for p, q in zip(net_a.parameters(), net_b.parameters()))
    assert not torch.equal(seed.params.detach(), torch.ones(2)), "σ should have moved"


def test_seed_checkpoint_loads_into_both_parameterizations():
    seed = SeedAWL(2)
    with torch.no_grad():
        seed.params.copy_(torch.tensor([2.0, -0.5]))
    state = seed.state_dict()
    a = AutomaticWeightedLoss(2)
    with pytest.warns(UserWarning, match="optimizer state"):
        a.load_state_dict(state)
    torch.testing.assert_close(a.sigma, torch.tensor([2.0, 0.5]))
    b = AutomaticWeightedLoss(2, parameterization="sigma")
    with pytest.warns(UserWarning, match="optimizer state"):
        b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.sigma, torch.tensor([2.0, 0.5]))


def test_seed_call_styles_work():
    awl = AutomaticWeightedLoss(2)
    expected = 0.5 * 1 + 0.5 * 2 + 2 * math.log(2)
    assert awl(1, 2).item() == pytest.approx(expected, rel=1e-6)
    l1, l2 = torch.tensor(1.0), torch.tensor(2.0)
    for out in (awl(l1, l2), awl([l1, l2]), awl(torch.stack([l1, l2])), awl({"seg": l1, "depth": l2})):
        assert out.item() == pytest.approx(expected, rel=1e-6)
    assert awl.task_names == ("seg", "depth")
    assert AutomaticWeightedLoss().num_tasks == 2  # the seed's default num=2
    assert awloss.get("awl", num_tasks=3).num_tasks == 3


# --------------------------------------------------------------------------- equilibria
@pytest.mark.parametrize("task_type", ["regression", "classification"])
@pytest.mark.parametrize("loss", [0.05, 1.0, 20.0])
def test_kendall_equilibrium_weight_is_one_over_two_L(loss, task_type):
    uw = adam_to_equilibrium(UncertaintyWeighting(1, task_types=task_type), torch.tensor([loss]))
    assert uw.weights.item() == pytest.approx(1 / (2 * loss), rel=1e-3)
    # σ differs between the forms (σ² = L vs 2L) even though the weight does not
    assert uw.sigma.item() ** 2 == pytest.approx(loss * (1 if task_type == "regression" else 2), rel=1e-3)


@pytest.mark.parametrize("loss", [0.01, 1.0, 100.0])
def test_liebel_equilibrium_variance_reached_by_adam_from_sigma_one(loss):
    awl = AutomaticWeightedLoss(1)
    assert awl.sigma.item() == 1.0
    adam_to_equilibrium(awl, torch.tensor([loss]), steps=3000, lr=0.05)
    v_star = (loss + math.sqrt(loss**2 + 8 * loss)) / 4
    assert awl.sigma.item() ** 2 == pytest.approx(v_star, rel=1e-3)
    assert awl.weights.item() == pytest.approx(UncertaintyWeighting.equilibrium_weight(loss, regularizer="log1p"), rel=1e-3)


def test_seed_gradient_at_init_is_one_minus_L():
    awl = AutomaticWeightedLoss(3, parameterization="sigma")
    L = torch.tensor([0.5, 1.0, 4.0])
    awl(L).backward()
    torch.testing.assert_close(awl.params.grad, 1 - L)


def test_equilibrium_table_of_the_research_notes():
    # seed-and-papers.md §1.3 item 4: (L, Kendall w*, Liebel w*)
    for L, kendall, liebel in [(1e-4, 5000, 70.5), (0.01, 50, 6.83), (1, 0.5, 0.5), (100, 0.005, 0.0098)]:
        assert UncertaintyWeighting.equilibrium_weight(L) == pytest.approx(kendall)
        assert UncertaintyWeighting.equilibrium_weight(L, regularizer="log1p") == pytest.approx(liebel, rel=5e-3)


# --------------------------------------------------------------------------- guards
@pytest.mark.parametrize("cls", [UncertaintyWeighting, AutomaticWeightedLoss])
def test_zero_or_absent_loss_keeps_weight_finite_over_10000_adam_steps(cls):
    w = cls(3)
    opt = torch.optim.Adam(w.param_groups(lr=0.025))
    for step in range(10_000):
        # task 0 always present, task 1 exactly zero, task 2 absent (None) in this batch
        out = w(torch.tensor(1.5), torch.tensor(0.0), None)
        opt.zero_grad()
        out.backward()
        opt.step()
    assert torch.isfinite(w.weights).all()
    assert w.weights[2].item() == 0.0  # absent from this batch: reported as 0 (issue 11 §2)
    assert w.sigma[1].item() == pytest.approx(w.sigma[2].item())
    assert w.weights[1].item() == pytest.approx(0.5)  # untouched from init (σ = 1)
    assert w.weights[0].item() == pytest.approx(UncertaintyWeighting.equilibrium_weight(1.5, regularizer=w.regularizer), rel=1e-2)


def test_without_the_guard_a_zero_loss_collapses_sigma():
    """The seed's issue #2, reproduced: documents why the guard exists."""
    w = AutomaticWeightedLoss(1, parameterization="sigma", mask_zero_losses=False)
    opt = torch.optim.Adam(w.param_groups(lr=1e-3))
    for _ in range(3000):
        out = w(torch.tensor(0.0))
        opt.zero_grad()
        out.backward()
        opt.step()
    assert w.weights.item() > 1e4


def test_clamp_bounds_log_variance():
    uw = UncertaintyWeighting(1, clamp=(-2.0, 2.0))
    adam_to_equilibrium(uw, torch.tensor([1e-4]), steps=600, lr=0.1)
    assert uw.weights.item() == pytest.approx(0.5 * math.exp(2.0), rel=1e-5)


def test_warns_when_parameters_are_not_in_the_optimizer():
    model = nn.Linear(3, 2)
    awl = AutomaticWeightedLoss(2)
    opt = torch.optim.Adam(model.parameters())  # the seed's users' mistake
    with pytest.warns(RuntimeWarning, match="not in any optimizer"):
        for _ in range(awl.stale_check_every + 1):
            out = model(torch.randn(8, 3)).pow(2).mean(0)
            total = awl(out[0], out[1])
            opt.zero_grad()
            total.backward()
            opt.step()


def test_no_warning_when_trained_properly():
    model = nn.Linear(3, 2)
    awl = AutomaticWeightedLoss(2)
    opt = torch.optim.Adam([{"params": model.parameters()}, *awl.param_groups()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3 * awl.stale_check_every):
            out = model(torch.randn(8, 3)).pow(2).mean(0)
            total = awl(out[0], out[1])
            opt.zero_grad()
            total.backward()
            opt.step()


def test_param_groups_defaults():
    (group,) = AutomaticWeightedLoss(2).param_groups()
    assert group["lr"] == 0.025 and group["weight_decay"] == 0.0
    (group,) = AutomaticWeightedLoss(2).param_groups(lr=0.1, weight_decay=1e-4, betas=(0.5, 0.9))
    assert group["lr"] == 0.1 and group["weight_decay"] == 1e-4 and group["betas"] == (0.5, 0.9)


# --------------------------------------------------------------------------- bad input
def test_negative_loss_is_refused_with_the_value():
    with pytest.raises(ValueError, match=r"`losses\[1\]` must be >= 0 for UncertaintyWeighting, got -0.5"):
        UncertaintyWeighting(2)(torch.tensor(1.0), torch.tensor(-0.5))


def test_constructor_errors_name_argument_and_value():
    with pytest.raises(ValueError, match=r"`num_tasks` must be >= 1, got 0"):
        UncertaintyWeighting(0)
    with pytest.raises(TypeError, match=r"`num_tasks` must be an int, got 2.5"):
        UncertaintyWeighting(2.5)
    with pytest.raises(ValueError, match=r"`regularizer` must be 'log' or 'log1p', got 'l2'"):
        UncertaintyWeighting(2, regularizer="l2")
    with pytest.raises(ValueError, match=r"`task_types`"):
        UncertaintyWeighting(2, task_types=("regression", "segmentation"))
    with pytest.raises(ValueError, match=r"`init` must be one finite float or 2"):
        UncertaintyWeighting(2, init=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"`clamp`"):
        UncertaintyWeighting(2, clamp=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"`parameterization`"):
        AutomaticWeightedLoss(2, parameterization="sigma2")
    with pytest.raises(ValueError, match=r"`task_names` has 3 names but `num_tasks` is 2"):
        UncertaintyWeighting(2, task_names=["a", "b", "c"])


def test_mapping_errors():
    uw = UncertaintyWeighting(2, task_names=["seg", "depth"])
    with pytest.raises(ValueError, match=r"missing \['depth'\]"):
        uw({"seg": torch.tensor(1.0), "dpth": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="empty mapping"):
        uw({})
    with pytest.raises(TypeError, match="must be a scalar tensor or a number, got str"):
        uw("a", "b")
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        uw(torch.ones(2, 2))


def test_device_mismatch_is_reported():
    uw = UncertaintyWeighting(2)
    with pytest.raises(ValueError, match="Losses are on meta but UncertaintyWeighting's parameters are on cpu"):
        uw(torch.ones(2, device="meta"))


def test_check_finite_can_be_disabled():
    uw = UncertaintyWeighting(2)
    uw.check_finite = False
    assert torch.isnan(uw(torch.tensor(1.0), torch.tensor(float("nan"))))


def test_weights_readable_before_first_call_and_after_reset():
    uw = UncertaintyWeighting(2, task_types=("regression", "classification"), init=[0.0, math.log(2.0)])
    torch.testing.assert_close(uw.weights, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(uw.sigma, torch.tensor([1.0, math.sqrt(2.0)]))


# --------------------------------------------------------------------------- fused kernel
@pytest.mark.parametrize("log1p", [False, True])
@pytest.mark.parametrize("mask", [False, True])
def test_fused_objective_matches_plain_ops_and_gradcheck(log1p, mask):
    from awloss.weighting._uncertainty_kernel import _uw_objective, _UWObjective

    torch.manual_seed(0)
    s = torch.randn(5, dtype=torch.float64, requires_grad=True)
    L = torch.rand(5, dtype=torch.float64)
    L[2] = 0.0
    L.requires_grad_(True)
    factor = torch.tensor([0.5, 1.0, 0.5, 1.0, 0.5], dtype=torch.float64)
    out_a, w_a = _uw_objective(s, L, factor, log1p, mask)
    out_b, w_b = _UWObjective.apply(s, L, factor, log1p, mask)
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(w_a, w_b)
    ga = torch.autograd.grad(out_a, [s, L])
    gb = torch.autograd.grad(out_b, [s, L])
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)
    # away from L = 0: a loss perturbed below 0 makes the fused objective NaN (its sign check)
    L_pos = L.detach().clamp_min(0.05).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s_, l_: _UWObjective.apply(s_, l_, factor, log1p, mask)[0], (s, L_pos))
    for c in (0.5, 1.0):  # one float for every task (the default path)
        f = torch.full_like(factor, c)
        torch.testing.assert_close(_UWObjective.apply(s, L, c, log1p, mask)[0], _uw_objective(s, L, f, log1p, mask)[0])
    if mask:
        assert ga[0][2] == 0  # the zero-loss task's s gets no gradient


@pytest.mark.parametrize("check_finite", [True, False])
def test_zero_loss_guard_holds_with_and_without_the_value_check(check_finite):
    """The mask is skipped only when the value check proved every loss > 0 in this very call."""
    uw = UncertaintyWeighting(2)
    uw.check_finite = check_finite
    uw(torch.tensor(1.0), torch.tensor(2.0))  # all positive: fast path
    uw(torch.tensor(3.0), torch.tensor(0.0)).backward()
    assert uw.log_var.grad[1] == 0 and uw.log_var.grad[0] != 0
