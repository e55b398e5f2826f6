"""Mixed precision: bf16 autocast on CPU, and GradScaler steps skipped on inf/NaN gradients.

The CUDA fp16 + GradScaler variant of the same loop is documented in README ("## Engines", AMP); it runs
on CPU here with the CPU GradScaler, and on CUDA where a GPU is available (``test_fp16_cuda``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import awloss


def _helpers():
    import sys

    if "_awloss_engines_common" not in sys.modules:  # importable by name (torch.compile needs that)
        spec = importlib.util.spec_from_file_location(
            "_awloss_engines_common", Path(__file__).with_name("_common.py")
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return sys.modules["_awloss_engines_common"]


H = _helpers()
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
