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


def _train_gradnorm(first_zero_steps: int, zero_from: int | None, steps: int = 120):
    torch.manual_seed(0)
    trunk, heads = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)
    gn = awloss.GradNorm(3, shared=trunk, lr=0.1)
    opt = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=1e-2)
    x = torch.randn(32, 4)
    for t in range(steps):
        out = heads(trunk(x))
        zero = t < first_zero_steps or (zero_from is not None and t >= zero_from)
        scale = 0.0 if zero else 1.0
        losses = [out[:, 0].pow(2).mean() * scale, (out[:, 1] - 1).pow(2).mean(), (out[:, 2] + 1).pow(2).mean()]
        total = gn(losses)
        opt.zero_grad()
        total.backward()
        opt.step()
    return gn, trunk


def test_a_zero_first_loss_does_not_collapse_the_other_weights():
    """Issue 11 §2: a task at loss 0 on the first call took L_i(0) = 0, so its rate stayed 1 forever and
    the other tasks' weights were driven toward the 1e-6 clamp (old main: [2.99, 7e-3, 5e-3] after 120
    steps)."""
    w = _train_gradnorm(first_zero_steps=1, zero_from=None)[0].task_weights
    assert bool(torch.isfinite(w).all()) and float(w.sum()) == pytest.approx(3.0, rel=1e-5)
    assert float(w.min()) > 0.1, w


def test_a_loss_reaching_zero_keeps_its_weight_and_leaves_the_others_balanced():
    gn, trunk = _train_gradnorm(first_zero_steps=0, zero_from=20)
    w = gn.task_weights
    assert float(w.min()) > 0.1, w
    kept = gn.task_weights[0].clone()
    y = trunk(torch.randn(5, 4))
    gn(y.sum() * 0.0, y.pow(2).mean(), (y - 1).pow(2).mean())  # task 0 at 0: left out of the step
    assert gn.task_weights[0] == kept and float(gn.task_weights.sum()) == pytest.approx(3.0, rel=1e-5)


def test_absent_task_is_left_out_and_the_others_sum_to_t_minus_1():
    torch.manual_seed(0)
    trunk = torch.nn.Linear(3, 4)
    gn = awloss.GradNorm(3, shared=trunk)
    for _ in range(5):
        y = trunk(torch.randn(8, 3))
        gn(y[:, 0].pow(2).mean(), 10 * y[:, 1].pow(2).mean(), y[:, 2].abs().mean()).backward()
    before = gn.task_weights.clone()
    y = trunk(torch.randn(8, 3))
    total = gn(y[:, 0].pow(2).mean(), None, y[:, 2].abs().mean())
    assert gn.weights[1] == 0 and float(gn.weights.sum()) == pytest.approx(2.0, rel=1e-5)
    torch.testing.assert_close(gn.weights[[0, 2]] / gn.weights[[0, 2]].sum(), before[[0, 2]] / before[[0, 2]].sum())
    assert gn.task_weights[1] == before[1]  # its state is untouched
    assert torch.isfinite(total)


def test_a_gradnorm_deep_copied_alone_warns_that_it_measures_a_copy():
    """Issue 11 §3: a deep copy of GradNorm alone measured copies of the layer and silently stopped."""
    import copy

    trunk = torch.nn.Linear(2, 2)
    gn = copy.deepcopy(awloss.GradNorm(2, shared=trunk))
    y = trunk(torch.ones(1, 2))
    with pytest.warns(UserWarning, match="no loss reaches the `shared` parameters"):
        gn(y[0, 0] ** 2, y[0, 1] ** 2)
    both = copy.deepcopy(torch.nn.ModuleDict({"trunk": trunk, "gn": awloss.GradNorm(2, shared=trunk)}))
    assert both["gn"]._shared[0] is both["trunk"].weight  # copied with the model: it measures the copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = both["trunk"](torch.ones(1, 2))
        both["gn"](y[0, 0] ** 2, y[0, 1] ** 2)


def test_checkpoint_with_another_alpha_is_refused():
    state = awloss.GradNorm(2, shared=torch.nn.Linear(1, 1), alpha=1.5).state_dict()
    with pytest.raises(ValueError, match=r"saved with `alpha`=1.5, but this GradNorm has `alpha`=0.5"):
        awloss.GradNorm(2, shared=torch.nn.Linear(1, 1), alpha=0.5).load_state_dict(state)
