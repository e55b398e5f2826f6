"""IMTL-L (Liu et al., ICLR 2021): Σ e^s L − s, equilibrium weights 1/L (scaled losses all equal 1)."""

import pytest
import torch

import awloss


@pytest.fixture(autouse=True)
def _immediate_checks(monkeypatch):
    """The messages here are checked within the call; the deferred mode (the default, the same message one
    call late) is checked for every method in tests/contract/test_deferred_checks.py."""
    monkeypatch.setattr(awloss.Weighting, "check", "immediate")


def test_value_weights_and_gradient_on_s():
    imtl = awloss.IMTLL(2, init=[0.0, 1.0])
    losses = torch.tensor([2.0, 0.5])
    out = imtl(losses)
    e = torch.tensor([1.0, 1.0]).exp()
    assert out.item() == pytest.approx(1.0 * 2.0 - 0.0 + e[1].item() * 0.5 - 1.0)
    out.backward()
    # d/ds (e^s L - s) = e^s L - 1
    torch.testing.assert_close(imtl.log_scale.grad, torch.tensor([2.0 - 1.0, e[1].item() * 0.5 - 1.0]))


def test_adam_reaches_the_equilibrium_where_every_scaled_loss_is_one():
    losses = torch.tensor([0.02, 1.0, 50.0])
    imtl = awloss.IMTLL(3)
    opt = torch.optim.Adam(imtl.param_groups(lr=0.05))
    for _ in range(800):
        opt.zero_grad()
        imtl(losses).backward()
        opt.step()
    imtl(losses)
    torch.testing.assert_close(imtl.weights * losses, torch.ones(3), rtol=1e-2, atol=0)
    torch.testing.assert_close(imtl.weights, 1 / losses, rtol=1e-2, atol=0)  # = ScaleInvariant's weights


def test_zero_loss_does_not_move_its_scale():
    imtl = awloss.IMTLL(2)
    opt = torch.optim.Adam(imtl.param_groups(lr=0.1))
    for _ in range(200):
        opt.zero_grad()
        imtl(torch.tensor(1.0), torch.tensor(0.0)).backward()
        opt.step()
    assert imtl.log_scale[1].item() == 0.0
    unmasked = awloss.IMTLL(2, mask_zero_losses=False)
    unmasked(torch.tensor(1.0), torch.tensor(0.0)).backward()
    assert unmasked.log_scale.grad[1].item() == -1.0  # the runaway the mask prevents


def test_learnable_metadata_and_bad_init():
    imtl = awloss.IMTLL(2)
    assert imtl.learnable and imtl.param_groups(lr=0.1)[0]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="`init` must have 2 entries"):
        awloss.IMTLL(2, init=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="`init` must be finite"):
        awloss.IMTLL(2, init=float("inf"))
    with pytest.raises(ValueError, match=r"must be >= 0 for IMTLL, got -1.0"):
        awloss.IMTLL(2)(torch.tensor(1.0), torch.tensor(-1.0))


@pytest.mark.parametrize("mask", [True, False])
def test_fused_node_matches_the_plain_ops(mask):
    from awloss.weighting._imtl_l import _imtl_objective

    s0 = torch.tensor([0.3, -0.2, 1.1], dtype=torch.float64)
    L0 = torch.tensor([2.0, 0.0, 0.7], dtype=torch.float64)
    imtl = awloss.IMTLL(3, mask_zero_losses=mask).double()
    with torch.no_grad():
        imtl.log_scale.copy_(s0)
    L = L0.clone().requires_grad_(True)
    out = imtl(L)
    out.backward()
    s_ref, L_ref = s0.clone().requires_grad_(True), L0.clone().requires_grad_(True)
    ref, w_ref = _imtl_objective(s_ref, L_ref, mask)
    ref.backward()
    torch.testing.assert_close(out.detach(), ref.detach())
    torch.testing.assert_close(imtl.weights, w_ref)
    torch.testing.assert_close(imtl.log_scale.grad, s_ref.grad)
    torch.testing.assert_close(L.grad, L_ref.grad)
