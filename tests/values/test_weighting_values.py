"""Reference values for the loss-level methods: (method, state, losses) -> (output, weights).

Every row cites its source: the paper's equation, an official formula evaluated by hand, or a derivation
written next to it. Numbers were computed with the ``math`` module from the formulas in the comments, not
with awloss. The weights are checked twice: against the row and against autograd (∂out/∂L_i).
"""

from __future__ import annotations

import math

import pytest
import torch

import awloss

E = math.exp
SQ2 = math.sqrt(2)
# FAMO after one update: logits (-0.025, 0.025) -> z, c = z0/1 + z1/4.
Z0 = E(-0.025) / (E(-0.025) + E(0.025))
Z1 = 1 - Z0
C = Z0 / 1 + Z1 / 4


def _dwa_after(epoch_means):
    dwa = awloss.DWA(2)
    for m in epoch_means:
        dwa(torch.tensor(m))
        dwa.step()
    return dwa


def _famo_after_update():
    famo = awloss.FAMO(2)
    famo(torch.tensor([1.0, 4.0]))
    famo.update(torch.tensor([0.5, 4.0]))
    return famo


def _gradnorm_after_one_step():
    # Shared scalar W = 1; L1 = 3 W^2 (|dL1/dW| = 6), L2 = W (|dL2/dW| = 1).
    W = torch.nn.Parameter(torch.tensor([1.0]))
    gn = awloss.GradNorm(2, shared=W)
    gn(3 * W.pow(2).sum(), W.sum())
    return gn, (3 * W.pow(2).sum(), W.sum())


def _imtl(s):
    m = awloss.IMTLL(2)
    with torch.no_grad():
        m.log_scale.copy_(torch.tensor(s))
    return m


ROWS = [
    # id, build() -> module (or (module, losses)), losses, expected output, expected weights, source
    ("sum", lambda: awloss.Sum(), [1.0, 2.5], 3.5, [1.0, 1.0], "definition: sum L_i"),
    ("mean", lambda: awloss.Mean(), [1.0, 2.0, 6.0], 3.0, [1 / 3] * 3, "definition: (1/T) sum L_i"),
    ("constant", lambda: awloss.Constant([1.0, 0.1]), [2.0, 3.0], 2.3, [1.0, 0.1], "sum c_i L_i = 2 + 0.3"),
    # Navon et al. 2022 SI: sum log L = log 0.5 + log 4 = log 2; w = 1/L.
    ("si", lambda: awloss.ScaleInvariant(), [0.5, 4.0], math.log(2), [2.0, 0.25], "Navon et al. 2022, SI"),
    # Chennupati et al. 2019 Eq. 2: (1*4*16)^(1/3) = 4; w_i = 4 / (3 L_i).
    ("gls", lambda: awloss.GeometricMean(), [1.0, 4.0, 16.0], 4.0, [4 / 3, 1 / 3, 1 / 12], "MultiNet++ Eq. 2"),
    # Liu et al. 2019 Eq. 7: epochs 1-2 use w = 1.
    ("dwa-epoch1", lambda: _dwa_after([]), [2.0, 3.0], 5.0, [1.0, 1.0], "MTAN Eq. 7, t <= 2"),
    ("dwa-epoch2", lambda: _dwa_after([[1.0, 1.0]]), [2.0, 3.0], 5.0, [1.0, 1.0], "MTAN Eq. 7, t <= 2"),
    # r = (0.5/1, 1/1), tau = 2: w = 2 softmax(0.25, 0.5) = (0.875647, 1.124353); out = 2 w0 + 3 w1.
    (
        "dwa-epoch3",
        lambda: _dwa_after([[1.0, 1.0], [0.5, 1.0]]),
        [2.0, 3.0],
        2 * 2 * E(0.25) / (E(0.25) + E(0.5)) + 3 * 2 * E(0.5) / (E(0.25) + E(0.5)),
        [2 * E(0.25) / (E(0.25) + E(0.5)), 2 * E(0.5) / (E(0.25) + E(0.5))],
        "MTAN Eq. 7 by hand",
    ),
    # RLW in eval mode uses the distribution's mean 1/T (documented); training draws are tested in methods/.
    ("rlw-eval", lambda: awloss.RLW(4, seed=0).eval(), [1.0, 2.0, 3.0, 4.0], 2.5, [0.25] * 4, "E[softmax(z)] = 1/T"),
    # Liu et al. 2021 IMTL-L: sum e^s L - s with s = (0, ln 2): 2 - 0 + 2*0.5 - ln 2.
    ("imtl_l", lambda: _imtl([0.0, math.log(2)]), [2.0, 0.5], 3 - math.log(2), [1.0, 2.0], "IMTL-L, Sec. 3.2"),
    # Kirchdorfer et al. 2024 UW-SO: softmax(1/L / T) with T = 1: softmax(2, 1).
    (
        "uwso",
        lambda: awloss.UWSO(temperature=1.0),
        [0.5, 1.0],
        0.5 * E(2) / (E(2) + E(1)) + E(1) / (E(2) + E(1)),
        [E(2) / (E(2) + E(1)), E(1) / (E(2) + E(1))],
        "UW-SO equation by hand",
    ),
    # FAMO (official famo.py formula): z = (1/2, 1/2), c = 0.5/1 + 0.5/4 = 0.625, out = 0.5 ln 4 / c, w = z/(c L).
    ("famo-init", lambda: awloss.FAMO(2), [1.0, 4.0], 0.5 * math.log(4) / 0.625, [0.8, 0.2], "FAMO Alg. 1"),
    # After update (1,4) -> (0.5,4): delta = (ln 2, 0); grad = z (delta - z.delta) = (+, -); Adam's first step
    # moves each logit by lr = 0.025 against the sign: xi = (-0.025, 0.025). Then z = softmax(xi), c = z0 + z1/4.
    (
        "famo-after-update",
        _famo_after_update,
        [1.0, 4.0],
        (Z0 * math.log(1) + Z1 * math.log(4)) / C,
        [Z0 / (C * 1), Z1 / (C * 4)],
        "FAMO Alg. 1 + Adam's first step by hand",
    ),
    # Chen et al. 2018 Alg. 1: G = (6, 1), r = (1, 1), target = mean G = 3.5; dLgrad/dw = sign(G - target) n
    # = (6, -1); Adam's first step: w = (1 - 0.025, 1 + 0.025), sum already 2. Next call: 0.975*3 + 1.025*1.
    ("gradnorm-after-step", _gradnorm_after_one_step, None, 0.975 * 3 + 1.025, [0.975, 1.025], "GradNorm Alg. 1"),
    # Lin et al. 2024 Eq. 8, mu = 1, lambda = 1, z* = 0: log(e + e) = 1 + ln 2.
    ("stch", lambda: awloss.STCH(2), [1.0, 1.0], 1 + math.log(2), [0.5, 0.5], "STCH Eq. 8"),
    # COSMOS (Ruchte & Grabocka 2021, Eq. 4): r = (1, 1), L = (3, 4): r.L = 7, |r| = sqrt 2, |L| = 5,
    # total = 7 - 7 / (5 sqrt 2); w = r - d cos / d L, d cos / d L_i = r_i / (|r| |L|) - (r.L) L_i / (|r| |L|^3).
    ("cosmos", lambda: awloss.get("cosmos", lambda_=1.0, weights=[1.0, 1.0]), [3.0, 4.0], 7 - 7 / (5 * SQ2),
     [1 - (1 / (SQ2 * 5) - 7 * 3 / (SQ2 * 125)), 1 - (1 / (SQ2 * 5) - 7 * 4 / (SQ2 * 125))], "COSMOS Eq. 4"),
    # PBI (Zhang & Li 2007, MOEA/D Eq. 8), theta = 5, r = (1, 1), z* = 0, L = (3, 4): d1 = 7 / sqrt 2,
    # residual L - d1 r_hat = (-1/2, 1/2), d2 = sqrt(1/2); w = r_hat + theta * residual / d2.
    ("pbi", lambda: awloss.get("pbi", theta=5.0, weights=[1.0, 1.0]), [3.0, 4.0], 7 / SQ2 + 5 * math.sqrt(0.5),
     [1 / SQ2 - 5 * 0.5 / math.sqrt(0.5), 1 / SQ2 + 5 * 0.5 / math.sqrt(0.5)], "MOEA/D PBI, Eq. 8"),
    (
        "stch-mu0.5",
        lambda: awloss.STCH(2, mu=0.5),
        [1.0, 2.0],
        0.5 * math.log(E(2) + E(4)),
        [E(2) / (E(2) + E(4)), E(4) / (E(2) + E(4))],
        "STCH Eq. 8 by hand",
    ),
    # Kendall et al. 2018 Eqs. 7/10 at s = 0: 1/2 L (regression) and L (classification).
    (
        "uw-kendall",
        lambda: awloss.UncertaintyWeighting(2, task_types=("regression", "classification")),
        [2.0, 0.5],
        1.5,
        [0.5, 1.0],
        "Kendall Eqs. 7, 10",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_reference_value(row):
    _, build, losses, expected_out, expected_w, _source = row
    built = build()
    if isinstance(built, tuple):  # the module and the (graph-carrying) losses to feed it
        module, loss_list = built
        loss_vec = torch.stack(list(loss_list))
        out = module(loss_vec)
    else:
        module = built
        loss_vec = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
        out = module(loss_vec)
    assert out.item() == pytest.approx(expected_out, rel=1e-5, abs=1e-6)
    expected = torch.tensor(expected_w, dtype=torch.float64)
    torch.testing.assert_close(module.weights.double(), expected, rtol=1e-5, atol=1e-6)
    if loss_vec.is_leaf:
        (grad,) = torch.autograd.grad(out, loss_vec)
        torch.testing.assert_close(grad, module.weights.to(grad.dtype), rtol=1e-5, atol=1e-6)


def test_every_weighting_has_a_row():
    covered = {r[0].split("-")[0] for r in ROWS} | {"awl"}  # awl: the core's own value tests (seed oracle)
    assert set(awloss.available("weighting")) <= covered
