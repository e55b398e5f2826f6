"""Stop mid-epoch, save, rebuild, load, resume: the same trajectory as the uninterrupted run, bit for bit."""

from __future__ import annotations

import io

import pytest
import torch

import awloss
import _awloss_engines_common as H  # registered by conftest.py

STATEFUL = [n for n in awloss.available("weighting") if awloss.get_class(n).stateful]
STEPS, STOP = 8, 4  # epochs end after steps 2, 5: step 4 is mid-epoch


def _run(name, start, stop, parts=None):
    model, w, opt = H.build(name, seed=0 if parts is None else 123)  # a different init when resuming
    if parts is not None:
        model.load_state_dict(parts["model"])
        w.load_state_dict(parts["weighting"])
        opt.load_state_dict(parts["optimizer"])
        torch.set_rng_state(parts["rng"])
    history = []
    for step in range(start, stop):
        x, y = H.make_batch(step, 8)
        H.train_step(step, lambda x, y: w(H.task_losses(model(x), y)), model, w, opt, x, y)
        history.append(w.weights.clone())
    return model, w, opt, history


@pytest.mark.parametrize("name", STATEFUL)
def test_resume_mid_epoch_reproduces_uninterrupted_run(name):
    torch.manual_seed(7)
    full_model, full_w, _, full_hist = _run(name, 0, STEPS)

    torch.manual_seed(7)
    model, w, opt, hist = _run(name, 0, STOP)
    buf = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "weighting": w.state_dict(), "optimizer": opt.state_dict(),
         "rng": torch.get_rng_state()},
        buf,
    )
    del model, w, opt
    buf.seek(0)
    parts = torch.load(buf, weights_only=True)  # plain tensors only: no pickled objects in the state
    model, w, _, rest = _run(name, STOP, STEPS, parts)

    assert torch.equal(torch.stack(hist + rest), torch.stack(full_hist))
    for k, v in full_w.state_dict().items():
        assert torch.equal(w.state_dict()[k], v), k
    for k, v in full_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


@pytest.mark.parametrize("name", STATEFUL)
def test_resume_without_weighting_state_differs(name):
    """The control: dropping the weighting's state_dict changes the trajectory (so the test above can fail)."""
    torch.manual_seed(7)
    _, full_w, _, full_hist = _run(name, 0, STEPS)
    torch.manual_seed(7)
    model, w, opt, hist = _run(name, 0, STOP)
    fresh = H.make_weighting(name, model=model).double().state_dict()
    if all(torch.equal(fresh[k], v) for k, v in full_w.state_dict().items()):
        pytest.skip(f"{name}: its state does not evolve with the default arguments, so there is nothing to drop")
    parts = {"model": model.state_dict(), "weighting": H.make_weighting(name, model=model).double().state_dict(),
             "optimizer": opt.state_dict(), "rng": torch.get_rng_state()}
    _, w, _, rest = _run(name, STOP, STEPS, parts)
    same_history = torch.equal(torch.stack(hist + rest), torch.stack(full_hist))
    same_state = all(torch.equal(w.state_dict()[k], v) for k, v in full_w.state_dict().items())
    assert not (same_history and same_state)


# ----------------------------------------------------------------------------- gradient level
STATEFUL_AGGREGATORS = [n for n in awloss.available("aggregator") if getattr(awloss.get_class(n), "stateful", False)]


def _run_agg(name, start, stop, parts=None):
    torch.manual_seed(0 if parts is None else 123)
    model = H.TinyMTL().double()
    agg = awloss.get(name).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    if parts is not None:
        model.load_state_dict(parts["model"])
        agg.load_state_dict(parts["aggregator"])
        opt.load_state_dict(parts["optimizer"])
        torch.set_rng_state(parts["rng"])
    history = []
    for step in range(start, stop):
        x, y = H.make_batch(step, 8)
        opt.zero_grad()
        w = awloss.backward(H.task_losses(model(x), y), model.trunk.parameters(), agg)
        opt.step()
        history.append(w.clone())
    return model, agg, opt, history


@pytest.mark.parametrize("name", STATEFUL_AGGREGATORS)
def test_aggregator_resume_reproduces_uninterrupted_run(name):
    torch.manual_seed(7)
    full_model, full_agg, _, full_hist = _run_agg(name, 0, STEPS)
    torch.manual_seed(7)
    model, agg, opt, hist = _run_agg(name, 0, STOP)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "aggregator": agg.state_dict(), "optimizer": opt.state_dict(),
                "rng": torch.get_rng_state()}, buf)
    buf.seek(0)
    model, agg, _, rest = _run_agg(name, STOP, STEPS, torch.load(buf, weights_only=True))
    assert torch.equal(torch.stack(hist + rest), torch.stack(full_hist))
    for k, v in full_agg.state_dict().items():
        assert torch.equal(agg.state_dict()[k], v), k
    for k, v in full_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    initial = awloss.get(name).double().state_dict()  # the control: the state did evolve, so it mattered
    assert any(initial[k].shape != v.shape or not torch.equal(initial[k], v) for k, v in full_agg.state_dict().items())
