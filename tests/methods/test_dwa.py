"""DWA (Liu, Johns & Davison, CVPR 2019): uniform for epochs 1-2, then T·softmax(r/τ)."""

import math

import pytest
import torch

import awloss


def run_epoch(dwa, epoch_losses, batches=3):
    """Feed `batches` calls whose mean is `epoch_losses`, return the weights used, then step()."""
    used = []
    for k in range(batches):
        jitter = 0.05 * (k - (batches - 1) / 2)  # mean-zero noise across the epoch
        dwa(torch.tensor(epoch_losses) + jitter * min(epoch_losses))
        used.append(dwa.weights.clone())
    dwa.step()
    return used


def test_uniform_for_the_first_two_epochs_then_the_paper_formula():
    dwa = awloss.DWA(2)
    for w in run_epoch(dwa, [2.0, 1.0]) + run_epoch(dwa, [1.0, 0.9]):  # epochs 1 and 2
        torch.testing.assert_close(w, torch.ones(2))
    third = run_epoch(dwa, [0.8, 0.85])
    r = [1.0 / 2.0, 0.9 / 1.0]  # L(t-1)/L(t-2) with epoch means
    e = [math.exp(v / 2.0) for v in r]
    expected = torch.tensor([2 * e[0] / sum(e), 2 * e[1] / sum(e)])
    for w in third:
        torch.testing.assert_close(w, expected)
    fourth = run_epoch(dwa, [0.7, 0.8])[0]
    r = [0.8 / 1.0, 0.85 / 0.9]
    e = [math.exp(v / 2.0) for v in r]
    torch.testing.assert_close(fourth, torch.tensor([2 * e[0] / sum(e), 2 * e[1] / sum(e)]))


def test_weights_sum_to_T_and_slow_task_gets_more():
    dwa = awloss.DWA(3)
    for losses in ([1.0, 1.0, 1.0], [0.5, 1.0, 0.9]):
        run_epoch(dwa, losses)
    w = run_epoch(dwa, [0.4, 1.0, 0.8])[0]
    assert w.sum().item() == pytest.approx(3.0)
    assert w[1] > w[2] > w[0]


def test_large_temperature_gives_equal_weights():
    dwa = awloss.DWA(2, temperature=1e6)
    run_epoch(dwa, [1.0, 1.0])
    run_epoch(dwa, [0.1, 1.0])
    torch.testing.assert_close(run_epoch(dwa, [0.1, 1.0])[0], torch.ones(2), atol=1e-5, rtol=0)


def test_eval_calls_are_not_accumulated():
    dwa = awloss.DWA(2)
    dwa(torch.tensor([1.0, 1.0]))
    dwa.eval()
    dwa(torch.tensor([100.0, 100.0]))
    dwa.train()
    dwa.step()
    torch.testing.assert_close(dwa.history[1], torch.tensor([1.0, 1.0]))


def test_step_without_losses_and_bad_temperature_raise():
    with pytest.raises(RuntimeError, match="no training losses were seen"):
        awloss.DWA(2).step()
    for t in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="`temperature` must be > 0"):
            awloss.DWA(2, temperature=t)


def test_zero_epoch_mean_gives_finite_weights():
    dwa = awloss.DWA(2)
    run_epoch(dwa, [0.0, 1.0], batches=1)
    run_epoch(dwa, [0.0, 1.0], batches=1)
    w = run_epoch(dwa, [0.0, 1.0], batches=1)[0]
    assert torch.isfinite(w).all() and w.sum().item() == pytest.approx(2.0)


def test_mean_rising_from_zero_does_not_make_the_weights_one_hot():
    """A previous epoch mean of 0 was clamped to the tiniest float: ratio 1e38, weights one-hot
    (old main: [2, 0]). It now counts as no information (ratio 1)."""
    dwa = awloss.DWA(2)
    run_epoch(dwa, [0.0, 1.0], batches=1)
    run_epoch(dwa, [0.5, 1.0], batches=1)
    w = run_epoch(dwa, [0.5, 1.0], batches=1)[0]
    torch.testing.assert_close(w, torch.ones(2))


def test_absent_task_is_left_out_of_its_epoch_mean():
    dwa = awloss.DWA(3)
    for epoch in range(3):
        for k in range(4):
            loss = torch.tensor(1.0 / (epoch + 1))
            dwa(loss, None if k % 2 else loss, torch.tensor(1.0))  # task 1 absent in half the batches
        dwa.step()
    torch.testing.assert_close(dwa.history[1], torch.tensor([1 / 3, 1 / 3, 1.0]))  # not 1/6 for task 1
    dwa(torch.tensor(1.0), None, torch.tensor(1.0))
    assert dwa.weights[1] == 0 and float(dwa.weights.sum()) == pytest.approx(2.0)


def test_state_dict_without_absent_count_still_loads():
    dwa = awloss.DWA(2)
    run_epoch(dwa, [1.0, 1.0], batches=2)
    state = dwa.state_dict()
    del state["absent_count"]  # a checkpoint of the previous release
    fresh = awloss.DWA(2)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.history, dwa.history)
