"""Mixed precision: bf16 autocast on CPU, and GradScaler steps skipped on inf/NaN gradients.

The CUDA fp16 + GradScaler variant of the same loop is documented in README ("## Engines", AMP); it runs
on CPU here with the CPU GradScaler, and on CUDA where a GPU is available (``test_fp16_cuda``).
"""

from __future__ import annotations

import pytest
import torch

import awloss
import _awloss_engines_common as H  # registered by conftest.py

NAMES = awloss.available("weighting")


def _float_state(w):
    return {k: v.clone() for k, v in w.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_cpu_keeps_fp32_params_and_finite_outputs(name):
    model, w, opt = H.build(name, dtype=torch.float32)
    for step in range(5):
        x, y = H.make_batch(step, 16, dtype=torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model(x)
            assert pred.dtype == torch.bfloat16  # autocast is really on
            total = w(H.task_losses(pred, y))
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        opt.step()
        if H.has_update(w):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                w.update(H.task_losses(model(x), y))
    for p in w.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
    for b in w.buffers():
        assert not b.is_floating_point() or torch.isfinite(b).all()
    assert torch.isfinite(w.weights).all() and w.weights.dtype in (torch.float32, torch.float64)


def _scaled_run(name, device="cpu", dtype=torch.bfloat16, poison_step=2, steps=4):
    """Train with GradScaler; at ``poison_step`` an inf gradient (an fp16 overflow) makes the scaler skip."""
    model, w, opt = H.build(name, dtype=torch.float32)
    model.to(device), w.to(device)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**8)
    snapshots = []
    for step in range(steps):
        x, y = (t.to(device) for t in H.make_batch(step, 16, dtype=torch.float32))
        with torch.autocast(device, dtype=dtype):
            total = w(H.task_losses(model(x), y))
        opt.zero_grad()
        scaler.scale(total).backward()
        if step == poison_step:
            model.trunk[0].weight.grad[0, 0] = float("inf")
        before_params = [p.detach().clone() for p in w.parameters()]
        before_opt = {k: {n: v.clone() for n, v in s.items()} for k, s in opt.state_dict()["state"].items()}
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        skipped = scaler.get_scale() < scale
        if not skipped and H.has_update(w):  # a skipped step must not feed the method's post-step hook
            with torch.no_grad(), torch.autocast(device, dtype=dtype):
                w.update(H.task_losses(model(x), y))
        snapshots.append((skipped, before_params, [p.detach().clone() for p in w.parameters()], before_opt, opt))
    return model, w, snapshots


@pytest.mark.parametrize("name", NAMES)
def test_gradscaler_skipped_step_leaves_weighting_untouched(name):
    model, w, snaps = _scaled_run(name)
    assert [s[0] for s in snaps] == [False, False, True, False]
    skipped, before, after, before_opt, opt = snaps[2]
    for b, a in zip(before, after):
        assert torch.equal(a, b), "a skipped step changed the weighting's parameters"
    for t in [*w.parameters(), *w.buffers()]:
        assert not t.is_floating_point() or torch.isfinite(t).all()
    assert torch.isfinite(w.weights).all()
    for p in w.parameters():  # the step after the skipped one trained the weighting again (if learnable)
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", NAMES)
def test_fp16_cuda_gradscaler(name):
    model, w, snaps = _scaled_run(name, device="cuda", dtype=torch.float16)
    assert snaps[2][0]
    for b, a in zip(snaps[2][1], snaps[2][2]):
        assert torch.equal(a, b)
    for p in w.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()


# ----------------------------------------------------------------------------- gradient level
AGGREGATORS = awloss.available("aggregator")


def _agg_run(name, steps=3, scaler=None, autocast_dtype=None):
    torch.manual_seed(0)
    model = H.TinyMTL()
    agg = awloss.get(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    returned = []
    for step in range(steps):
        x, y = H.make_batch(step, 16, dtype=torch.float32)
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            losses = H.task_losses(model(x), y)
        opt.zero_grad()
        returned.append(awloss.backward(losses, model.trunk.parameters(), agg, scaler=scaler))
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
    return model, agg, returned


@pytest.mark.parametrize("name", AGGREGATORS)
def test_aggregator_bf16_autocast(name):
    before = H.TinyMTL().state_dict()
    model, agg, _ = _agg_run(name, autocast_dtype=torch.bfloat16)
    for p in model.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.values()))


@pytest.mark.parametrize("name", AGGREGATORS)
def test_aggregator_gradscaler_equals_unscaled_run(name):
    """awloss.backward(..., scaler=) unscales J before aggregating: exact even for non-homogeneous methods."""
    ref, _, _ = _agg_run(name)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=10**6)
    got, _, _ = _agg_run(name, scaler=scaler)
    assert scaler.get_scale() == 2.0**12  # no step was skipped
    for a, b in zip(got.state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_aggregator_gradscaler_overflow_skips_step_and_keeps_state(name):
    """Scaled gradients overflow (finite losses): the step is skipped, the aggregator's state untouched."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, growth_interval=10**6)
    torch.manual_seed(0)
    model = H.TinyMTL()
    agg = awloss.get(name)
    if type(agg).transform_losses is not awloss.Aggregator.transform_losses:
        pytest.skip(f"{name} log-transforms the losses: a loss's scale never reaches its gradients")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = H.make_batch(0, 16, dtype=torch.float32)
    assert awloss.backward(H.task_losses(model(x), y), model.trunk.parameters(), agg, scaler=scaler) is not None \
        or not getattr(agg, "weighted", True)
    scaler.step(opt)
    scaler.update()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: v.clone() for k, v in agg.state_dict().items()}
    x, y = H.make_batch(1, 16, dtype=torch.float32)
    opt.zero_grad()
    huge = [loss * 1e30 for loss in H.task_losses(model(x), y)]  # finite, but 2^40 x its gradient is not
    out = awloss.backward(huge, model.trunk.parameters(), agg, scaler=scaler)
    scaler.step(opt)
    scaler.update()
    assert out is None and scaler.get_scale() == 2.0**39  # skipped and backed off
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    for k, v in agg.state_dict().items():
        assert torch.equal(v, state[k]), k
