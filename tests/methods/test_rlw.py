"""RLW (Lin et al., TMLR 2022): softmax of standard normals, on the simplex, seedable and resumable."""

import pytest
import torch

import awloss


def draws(rlw, n):
    out = []
    for _ in range(n):
        rlw(torch.ones(rlw.num_tasks))
        out.append(rlw.weights)
    return torch.stack(out)


@pytest.mark.parametrize("T", [2, 5])
def test_on_the_simplex_with_mean_one_over_T(T):
    w = draws(awloss.RLW(T, seed=123), 4000)
    assert (w > 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(4000))
    # E[softmax(z)_i] = 1/T by symmetry; the sample mean's std is < 0.3/sqrt(4000) ~ 0.005.
    torch.testing.assert_close(w.mean(0), torch.full((T,), 1.0 / T), atol=0.02, rtol=0)


def test_distribution_matches_an_independent_softmax_of_normals():
    # Second moment and the mean of the largest weight, against an oracle drawn with torch's global RNG.
    T, n = 3, 4000
    w = draws(awloss.RLW(T, seed=7), n)
    g = torch.Generator().manual_seed(99)
    ref = torch.softmax(torch.randn(n, T, generator=g), dim=1)
    assert (w**2).mean().item() == pytest.approx((ref**2).mean().item(), abs=0.01)
    assert w.max(1).values.mean().item() == pytest.approx(ref.max(1).values.mean().item(), abs=0.02)


def test_seed_reproduces_and_differs():
    a, b, c = draws(awloss.RLW(3, seed=1), 5), draws(awloss.RLW(3, seed=1), 5), draws(awloss.RLW(3, seed=2), 5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_default_seed_follows_torch_manual_seed_and_leaves_the_global_stream_alone():
    torch.manual_seed(3)
    a = awloss.RLW(3)
    after_construction = torch.random.get_rng_state()
    wa = draws(a, 5)
    assert torch.equal(torch.random.get_rng_state(), after_construction)  # draws use the private generator
    torch.manual_seed(3)
    assert torch.equal(draws(awloss.RLW(3), 5), wa)


def test_eval_mode_uses_the_mean_weights():
    rlw = awloss.RLW(4, seed=0).eval()
    rlw(torch.ones(4))
    torch.testing.assert_close(rlw.weights, torch.full((4,), 0.25))


def test_checkpoint_and_reset_replay_the_sequence():
    rlw = awloss.RLW(3, seed=5)
    first = draws(rlw, 3)
    state = rlw.state_dict()
    nxt = draws(rlw, 3)
    other = awloss.RLW(3, seed=0)
    other.load_state_dict(state)
    assert torch.equal(draws(other, 3), nxt)
    rlw.reset()
    assert torch.equal(draws(rlw, 3), first)


def test_bad_seed():
    for seed in (-1, 1.5, "x", True):
        with pytest.raises(ValueError, match="`seed` must be a non-negative int"):
            awloss.RLW(2, seed=seed)
