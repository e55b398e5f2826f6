"""FAMO (Liu et al., NeurIPS 2023): log-loss weighting whose logits equalise the loss-decrease rates."""

import pytest
import torch

import awloss


@pytest.fixture(autouse=True)
def _immediate_checks(monkeypatch):
    """The messages here are checked within the call; the deferred mode (the default, the same message one
    call late) is checked for every method in tests/contract/test_deferred_checks.py."""
    monkeypatch.setattr(awloss.Weighting, "check", "immediate")


def linear_toy(method, steps, lr=0.01):
    """Two consistent least-squares tasks on one shared vector, losses 100x apart, Adam on the model.

    Returns log(L_i(t) / L_i(0)) for every step t (the quantity FAMO balances).
    """
    g = torch.Generator().manual_seed(0)
    A = [torch.randn(8, 16, generator=g) for _ in range(2)]
    target = torch.randn(16, generator=g)
    y = [a @ target for a in A]
    scale = [1.0, 100.0]
    theta = torch.nn.Parameter(torch.zeros(16))
    opt = torch.optim.Adam([theta], lr=lr)

    def losses():
        return torch.stack([scale[i] * (A[i] @ theta - y[i]).pow(2).mean() for i in range(2)])

    first = losses().detach()
    history = []
    for _ in range(steps):
        total = method(losses())
        opt.zero_grad()
        total.backward()
        opt.step()
        with torch.no_grad():
            new = losses()
        method.update(new)  # FAMO: the same batch recomputed after the step; a no-op for Mean
        history.append(torch.log(new / first))
    return torch.stack(history)


def test_famo_decreases_both_losses_at_matching_rates():
    famo = linear_toy(awloss.FAMO(2), 500)
    mean = linear_toy(awloss.Mean(2), 500)
    for t in (99, 199, 299, 499):
        a, b = famo[t].tolist()
        assert a < -1.0 and b < -1.0
        assert abs(a - b) <= 0.15 * max(abs(a), abs(b)), (t, a, b)
    a, b = mean[199].tolist()
    assert b < 3 * a  # plain averaging: the 100x task falls more than 3x faster in log-loss


def test_official_gamma_001_stalls_on_the_same_toy():
    # Why the default is gamma = 1e-3 (see the docstring Note): with 0.01 the decay dominates the logit signal.
    a, b = linear_toy(awloss.FAMO(2, gamma=0.01), 300)[299].tolist()
    assert abs(a - b) > 0.5 * max(abs(a), abs(b))


def test_weights_are_normalised_log_loss_gradients():
    famo = awloss.FAMO(3)
    famo.logits.copy_(torch.tensor([0.2, -0.1, 0.4]))
    losses = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64, requires_grad=True)
    out = famo(losses)
    z = torch.softmax(torch.tensor([0.2, -0.1, 0.4], dtype=torch.float64), 0)
    c = (z / losses.detach()).sum()
    ref = (z * torch.log(losses)).sum() / c  # the official objective, differentiated by autograd
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(famo.weights, torch.autograd.grad(ref, losses)[0])
    assert famo.weights.sum().item() == pytest.approx(1.0)


def test_update_matches_torch_adam_on_the_official_logit_gradient():
    famo = awloss.FAMO(3, lr=0.05, gamma=0.01)
    xi = torch.zeros(3, requires_grad=True)
    oracle = torch.optim.Adam([xi], lr=0.05, weight_decay=0.01)
    torch.manual_seed(0)
    for _ in range(6):
        before, after = torch.rand(3) + 0.5, torch.rand(3) + 0.5
        famo(before)
        famo.update(after)
        delta = torch.log(before + 1e-8) - torch.log(after + 1e-8)
        oracle.zero_grad()
        xi.grad = torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)[0]
        oracle.step()
        torch.testing.assert_close(famo.logits, xi.detach(), rtol=1e-5, atol=1e-6)


def test_min_losses_shift_the_log():
    famo = awloss.FAMO(2, min_losses=[1.0, 0.0])
    famo(torch.tensor([3.0, 2.0]))
    torch.testing.assert_close(famo.weights, torch.tensor([0.5, 0.5]), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match=r"`losses\[0\]` = 0.5 is below its lower bound `min_losses\[0\]` = 1.0"):
        famo(torch.tensor([0.5, 2.0]))


def test_bad_use_and_bad_input():
    with pytest.raises(RuntimeError, match="needs a training call first"):
        awloss.FAMO(2).update(torch.tensor([1.0, 1.0]))
    famo = awloss.FAMO(2)
    famo(torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"`losses\[1\]` must be finite, got nan"):
        famo.update(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="Expected 2 losses"):
        famo.update(torch.tensor([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"must be >= 0 for FAMO, got -1.0|below its lower bound"):
        famo(torch.tensor([-1.0, 1.0]))
    assert torch.isfinite(famo(torch.tensor([0.0, 1.0])))  # a zero loss: log(0 + eps), finite
    for kw in ({"lr": 0.0}, {"gamma": -1.0}, {"eps": 0.0}):
        with pytest.raises(ValueError, match=f"`{next(iter(kw))}` must be"):
            awloss.FAMO(2, **kw)



def test_zero_or_absent_loss_leaves_the_others_their_weight():
    """Issue 11 §2: a loss of exactly 0 (or None) gave every other task a weight of about 1e-8
    (old main: [1e-8, 1.0, 5e-9]); it is now left out of the normalisation with weight 0."""
    for middle in (torch.tensor(0.0, requires_grad=True), None):
        famo = awloss.FAMO(3)
        famo(torch.tensor(1.0, requires_grad=True), middle, torch.tensor(2.0, requires_grad=True))
        torch.testing.assert_close(famo.weights, torch.tensor([2 / 3, 0.0, 1 / 3]))
        famo.update(torch.tensor(0.5), middle if middle is None else torch.tensor(0.0), torch.tensor(2.0))
        assert famo.logits[1] == 0 and famo.exp_avg[1] == 0  # no log-loss change: its logit is left alone
        ref = awloss.FAMO(2)
        ref(torch.tensor([1.0, 2.0]))
        ref.update(torch.tensor([0.5, 2.0]))
        torch.testing.assert_close(famo.logits[[0, 2]], ref.logits)  # the others move as for T - 1 tasks


def test_state_dict_without_prev_active_still_loads():
    famo = awloss.FAMO(2)
    famo(torch.tensor([1.0, 2.0]))
    state = famo.state_dict()
    del state["prev_active"]  # a checkpoint of the previous release
    fresh = awloss.FAMO(2)
    fresh.load_state_dict(state)
    fresh.update(torch.tensor([0.5, 2.0]))
    famo.update(torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(fresh.logits, famo.logits)
