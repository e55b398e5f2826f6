"""STCH (Lin et al., ICML 2024): smooth Tchebycheff scalarisation, and the authors' warm-up recipe."""

import math

import pytest
import torch

import awloss


@pytest.fixture(autouse=True)
def _immediate_checks(monkeypatch):
    """The messages here are checked within the call; the deferred mode (the default, the same message one
    call late) is checked for every method in tests/contract/test_deferred_checks.py."""
    monkeypatch.setattr(awloss.Weighting, "check", "immediate")


def test_paper_formula_value_and_weights():
    stch = awloss.STCH(3, mu=0.5, preference=[1.0, 2.0, 0.5], ideal=[0.1, 0.0, 0.2])
    losses = torch.tensor([1.0, 0.4, 2.0], dtype=torch.float64, requires_grad=True)
    out = stch(losses)
    terms = [1.0 * (1.0 - 0.1) / 0.5, 2.0 * 0.4 / 0.5, 0.5 * (2.0 - 0.2) / 0.5]
    assert out.item() == pytest.approx(0.5 * math.log(sum(math.exp(t) for t in terms)))
    (grad,) = torch.autograd.grad(out, losses)
    torch.testing.assert_close(stch.weights, grad)


@pytest.mark.parametrize("mu", [1.0, 0.1, 0.01])
def test_bounds_max_below_and_max_plus_mu_log_T_above(mu):
    # Lin et al. (2024), Prop. 3.4 style bound: max_i λ_i(L_i - z_i) <= g_mu <= max + mu log T.
    losses = torch.tensor([0.3, 1.2, 0.9, 1.1])
    out = awloss.STCH(4, mu=mu)(losses).item()
    assert 1.2 <= out <= 1.2 + mu * math.log(4) + 1e-6


def test_small_mu_focuses_on_the_worst_task_large_mu_spreads():
    losses = torch.tensor([0.3, 1.2, 0.9])
    sharp, flat = awloss.STCH(3, mu=1e-3), awloss.STCH(3, mu=1e3)
    sharp(losses), flat(losses)
    torch.testing.assert_close(sharp.weights, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(flat.weights, torch.full((3,), 1 / 3), atol=1e-3, rtol=0)


def test_warmup_recipe_log_sum_then_nadir_normalised():
    stch = awloss.STCH(2, warmup_epochs=2)
    for epoch, batch in enumerate(([4.0, 1.0], [2.0, 0.5])):  # two warm-up epochs
        for jitter in (-0.1, 0.1):
            losses = torch.tensor(batch) * (1 + jitter)
            stch(losses)
            torch.testing.assert_close(stch.weights, 1 / losses)  # Σ log L
        stch.step()
    torch.testing.assert_close(stch.nadir, torch.tensor([2.0, 0.5]))  # mean of the last warm-up epoch
    losses = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    out = stch(losses)
    ref = 2 * torch.logsumexp(torch.log(losses / torch.tensor([2.0, 0.5], dtype=torch.float64)), 0)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(stch.weights, torch.autograd.grad(ref, losses)[0])


def test_warmup_needs_positive_losses_and_a_last_epoch():
    stch = awloss.STCH(2, warmup_epochs=1)
    with pytest.raises(ValueError, match=r"`losses\[1\]` must be > 0 for STCH"):
        stch(torch.tensor(1.0), torch.tensor(0.0))
    with pytest.raises(RuntimeError, match="no training losses"):
        stch.step()
    assert torch.isfinite(awloss.STCH(2)(torch.tensor(0.0), torch.tensor(-3.0)))  # paper form: any sign


def test_bad_arguments():
    with pytest.raises(ValueError, match="`mu` must be > 0"):
        awloss.STCH(2, mu=0.0)
    with pytest.raises(ValueError, match="`preference` must be > 0"):
        awloss.STCH(2, preference=[1.0, -1.0])
    with pytest.raises(ValueError, match="`ideal` must have 2 entries"):
        awloss.STCH(2, ideal=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="`warmup_epochs` must be >= 0"):
        awloss.STCH(2, warmup_epochs=-1)
    with pytest.raises(ValueError, match=r"`losses\[0\]` must be finite, got nan"):
        awloss.STCH(2)(torch.tensor(float("nan")), torch.tensor(1.0))


def test_absent_task_is_left_out_of_the_soft_maximum_and_of_the_nadir():
    stch = awloss.STCH(3)
    stch(torch.tensor(1.0), None, torch.tensor(1.0))
    torch.testing.assert_close(stch.weights, torch.tensor([0.5, 0.0, 0.5]))  # old main: e/(2e+1) each
    stch = awloss.STCH(2, warmup_epochs=1)
    stch(torch.tensor(2.0), torch.tensor(1.0))
    stch(torch.tensor(4.0), None)
    assert stch.weights.tolist() == [0.25, 0.0]
    stch.step()
    torch.testing.assert_close(stch.nadir, torch.tensor([3.0, 1.0]))  # task 1 averaged over its one call
    out = stch(torch.tensor(3.0), None)
    torch.testing.assert_close(out, torch.tensor(0.0))  # T - 1 = 1 task at its nadir: log 1


def test_state_dict_with_a_scalar_loss_count_still_loads():
    stch = awloss.STCH(2, warmup_epochs=2)
    state = stch.state_dict()
    state["loss_count"] = torch.tensor(0)  # a checkpoint of the previous release
    fresh = awloss.STCH(2, warmup_epochs=2)
    fresh.load_state_dict(state)
    assert fresh.loss_count.shape == (2,)
