"""Kendall UW, ScaleInvariant, IMTL-L and UW-SO agree at equilibrium where theory says they should.

Derivation: for a constant loss L, Kendall's term c e^{-s} L + s/2 is minimised at e^{s} = 2cL, so the weight
c e^{-s} = 1/(2L) for both task types; SI's weight is d log L / dL = 1/L; IMTL-L's e^{s}L - s is minimised at
e^{s} = 1/L. So UW's weights are exactly half of SI's (same direction), IMTL-L's equal SI's, and UW-SO's logits
are SI's weights divided by the temperature: T_emp (log w_i - log w_j) = 1/L_i - 1/L_j
(Kirchdorfer et al. 2024 derive UW-SO from this analytic optimum).
"""

import pytest
import torch

import awloss

LOSSES = torch.tensor([0.05, 1.0, 20.0])


def train(method, steps=1500, lr=0.05):
    opt = torch.optim.Adam(method.param_groups(lr=lr))
    for _ in range(steps):
        opt.zero_grad()
        method(LOSSES).backward()
        opt.step()
    method(LOSSES)
    return method.weights


@pytest.fixture(scope="module")
def si_weights():
    si = awloss.ScaleInvariant()
    si(LOSSES)
    return si.weights


@pytest.mark.parametrize("task_type", ["regression", "classification"])
def test_kendall_uw_converges_to_half_the_si_weights(si_weights, task_type):
    uw = train(awloss.UncertaintyWeighting(3, task_types=task_type))
    torch.testing.assert_close(uw, 0.5 * si_weights, rtol=2e-2, atol=0)
    torch.testing.assert_close(uw / uw.sum(), si_weights / si_weights.sum(), rtol=2e-2, atol=0)


def test_imtl_l_converges_to_the_si_weights(si_weights):
    torch.testing.assert_close(train(awloss.IMTLL(3)), si_weights, rtol=2e-2, atol=0)


@pytest.mark.parametrize("temperature", [1.0, 10.0, 100.0])
def test_uwso_logits_are_the_si_weights_over_the_temperature(si_weights, temperature):
    uwso = awloss.UWSO(temperature=temperature)
    uwso(LOSSES)
    logw = torch.log(uwso.weights.double())
    si = si_weights.double()
    torch.testing.assert_close(temperature * (logw - logw[1]), si - si[1], rtol=1e-4, atol=1e-3)
    # and the analytic UW-SO ranks the tasks exactly as trained UW does
    uw = train(awloss.UncertaintyWeighting(3), steps=300)
    assert torch.equal(torch.argsort(uwso.weights), torch.argsort(uw))
