"""Checkpoints carry the hyper-parameters that define a method's objective (issue 11 §3).

A state dict saved with other objective-defining hyper-parameters (``objective_params``) but the same key
names used to load silently (UW "log" -> "log1p", regression -> classification: the weights changed).
It is now refused with an error naming the parameter and both values; a state dict without the extra
state (an older release) still loads.
"""

from __future__ import annotations

import io

import pytest
import torch

import awloss

WEIGHTINGS = awloss.available("weighting")

# (registered name, constructor kwargs saved, kwargs loaded, the parameter that differs)
MISMATCHES = [
    ("uw", {"regularizer": "log"}, {"regularizer": "log1p"}, "regularizer"),
    ("uw", {"task_types": "regression"}, {"task_types": "classification"}, "task_types"),
    ("awl", {"task_types": "regression"}, {"task_types": "classification"}, "task_types"),
    ("famo", {"min_losses": 0.0}, {"min_losses": 0.5}, "min_losses"),
    ("dwa", {"temperature": 2.0}, {"temperature": 5.0}, "temperature"),
    ("stch", {"mu": 1.0}, {"mu": 0.1}, "mu"),
    ("stch", {"warmup_epochs": 0}, {"warmup_epochs": 3}, "warmup_epochs"),
]


@pytest.mark.parametrize(("name", "saved", "loaded", "param"), MISMATCHES)
def test_a_checkpoint_with_other_objective_hyper_parameters_is_refused(name, saved, loaded, param):
    cls = awloss.get_class(name)
    state = cls(2, **saved).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # survives torch.save / weights_only loading
    with pytest.raises(ValueError, match=rf"saved with `{param}`=.*, but this {cls.__name__} has `{param}`="):
        cls(2, **loaded).load_state_dict(state)
    cls(2, **saved).load_state_dict(state)  # the same hyper-parameters load


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_every_method_round_trips_and_loads_a_state_dict_without_extra_state(name):
    cls = awloss.get_class(name)
    w = cls._make_example(2)
    state = w.state_dict()
    if cls.objective_params:
        assert "_extra_state" in state and isinstance(state["_extra_state"], torch.Tensor)
    cls._make_example(2).load_state_dict(state)
    old = {k: v for k, v in state.items() if k != "_extra_state"}  # a checkpoint of the previous release
    cls._make_example(2).load_state_dict(old)


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_declared_objective_params_exist(name):
    cls = awloss.get_class(name)
    w = cls._make_example(2)
    for p in cls.objective_params:
        assert hasattr(w, p), f"{name} declares objective parameter {p!r} but has no such attribute"
