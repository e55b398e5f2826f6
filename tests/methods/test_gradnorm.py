"""GradNorm (Chen et al., ICML 2018): gradient norms on the last shared layer driven to their targets."""

import pytest
import torch

import awloss


@pytest.fixture(autouse=True)
def _immediate_checks(monkeypatch):
    """The messages here are checked within the call; the deferred mode (the default, the same message one
    call late) is checked for every method in tests/contract/test_deferred_checks.py."""
    monkeypatch.setattr(awloss.Weighting, "check", "immediate")


def toy(steps, alpha=1.5):
    """Two regressions through a shared trunk; task 2's loss is 100x task 1's."""
    torch.manual_seed(0)
    X = torch.randn(128, 8)
    Y = X @ torch.randn(8, 2)
    trunk = torch.nn.Linear(8, 16)
    heads = torch.nn.Linear(16, 2)
    gn = awloss.GradNorm(2, shared=trunk, alpha=alpha)
    opt = torch.optim.Adam([*trunk.parameters(), *heads.parameters()], lr=1e-3)
    log_gap = []  # log of (G1/G2) / (target1/target2)
    for _ in range(steps):
        out = heads(torch.relu(trunk(X)))
        l1 = (out[:, 0] - Y[:, 0]).pow(2).mean()
        l2 = 100 * (out[:, 1] - Y[:, 1]).pow(2).mean()
        total = gn(l1, l2)
        opt.zero_grad()
        total.backward()
        opt.step()
        G, tgt = gn.grad_norms, gn.targets
        log_gap.append(float(torch.log(G[0] / G[1]) - torch.log(tgt[0] / tgt[1])))
    return gn, log_gap


def test_drives_gradient_norm_ratio_to_its_target_with_losses_100x_apart():
    gn, log_gap = toy(200)
    assert abs(log_gap[0]) > 3.0  # at the start the norms are ~100x apart from their targets
    late = log_gap[100:]
    assert sum(abs(v) for v in late) / len(late) < 0.5
    assert gn.task_weights[0] > 10 * gn.task_weights[1]  # the small task is up-weighted
    assert gn.task_weights.sum().item() == pytest.approx(2.0)


def test_does_not_double_count_gradients_into_the_model():
    torch.manual_seed(0)
    trunk, head = torch.nn.Linear(4, 6), torch.nn.Linear(6, 2)
    gn = awloss.GradNorm(2, shared=trunk)
    gn.task_weights.copy_(torch.tensor([1.5, 0.5]))
    x = torch.randn(10, 4)
    out = head(trunk(x))
    l1, l2 = out[:, 0].pow(2).mean(), out[:, 1].abs().mean()
    expected = torch.autograd.grad(1.5 * l1 + 0.5 * l2, [trunk.weight, head.weight], retain_graph=True)
    gn(l1, l2).backward()
    torch.testing.assert_close(trunk.weight.grad, expected[0])
    torch.testing.assert_close(head.weight.grad, expected[1])
    torch.testing.assert_close(gn.weights, torch.tensor([1.5, 0.5]))  # the loss used the pre-update weights
    assert not torch.equal(gn.task_weights, torch.tensor([1.5, 0.5]))  # ...and the next ones moved


def test_alpha_zero_targets_equal_gradient_norms():
    gn, log_gap = toy(150, alpha=0.0)
    G = gn.grad_norms
    assert float(G[0] / G[1]) == pytest.approx(1.0, abs=0.5)


def test_no_update_in_eval_or_without_graph_to_shared():
    trunk = torch.nn.Linear(2, 2)
    gn = awloss.GradNorm(2, shared=trunk)
    y = trunk(torch.ones(1, 2))
    gn.eval()
    gn(y[0, 0] ** 2, 100 * y[0, 1] ** 2)
    gn.train()
    gn(torch.tensor(1.0, requires_grad=True), torch.tensor(5.0, requires_grad=True))  # unrelated to `shared`
    torch.testing.assert_close(gn.task_weights, torch.ones(2))
    assert gn.state_dict().keys() >= {"task_weights", "initial_losses", "exp_avg", "exp_avg_sq"}
    assert not any(k.startswith("weight") or k.startswith("bias") for k in gn.state_dict())  # not the model's


def test_zero_initial_loss_and_negative_loss():
    trunk = torch.nn.Linear(2, 2)
    gn = awloss.GradNorm(2, shared=trunk)
    for k in range(3):
        y = trunk(torch.ones(1, 2))
        gn((y[0, 0] * 0) ** 2 if k == 0 else y[0, 0] ** 2, 100 * y[0, 1] ** 2).backward()
        assert torch.isfinite(gn.task_weights).all()
    with pytest.raises(ValueError, match=r"must be >= 0 for GradNorm, got -1.0"):
        gn(torch.tensor(-1.0), torch.tensor(1.0))


def test_bad_arguments():
    with pytest.raises(ValueError, match="`shared` must be the last shared layer"):
        awloss.GradNorm(2, shared=[])
    with pytest.raises(ValueError, match="`shared` must be the last shared layer"):
        awloss.GradNorm(2, shared=torch.zeros(3))
    with pytest.raises(ValueError, match="`alpha` must be >= 0"):
        awloss.GradNorm(2, shared=torch.nn.Linear(1, 1), alpha=-1.0)
    with pytest.raises(ValueError, match=r"`losses\[0\]` must be finite, got nan"):
        awloss.GradNorm(2, shared=torch.nn.Linear(1, 1))(torch.tensor(float("nan")), torch.tensor(1.0))
