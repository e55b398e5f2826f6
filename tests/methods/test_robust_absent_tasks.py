"""TrimmedMean and Krum with absent tasks (issue 11 §2 rule, §7): the absent task is left out and the others
get what the method gives the present rows alone, with its robustness parameter lowered to what they allow
(a warning, once). The outside review saw ``trimmed_mean`` (T=3, trim_number=1) and ``krum`` (T=4,
n_byzantine=1) raise with one task absent; these pin the documented behaviour down."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import awloss


def _setup(T: int, seed: int = 0):
    torch.manual_seed(seed)
    trunk = nn.Linear(4, 6).double()
    heads = [nn.Linear(6, 1).double() for _ in range(T)]
    x = torch.randn(16, 4, dtype=torch.float64)
    return trunk, heads, x


def _losses(trunk, heads, x, absent):
    f = torch.tanh(trunk(x))
    return [None if i in absent else (h(f).squeeze(-1) - (i + 1) * f.sum(1)).pow(2).mean() for i, h in enumerate(heads)]


def _jacobian_of_present(trunk, heads, x, absent):
    rows = []
    for L in _losses(trunk, heads, x, absent):
        if L is not None:
            g = torch.autograd.grad(L, list(trunk.parameters()), retain_graph=True)
            rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows)


def _step(agg, trunk, heads, x, absent):
    trunk.zero_grad()
    awloss.backward(_losses(trunk, heads, x, absent), list(trunk.parameters()), agg)
    return torch.cat([p.grad.reshape(-1) for p in trunk.parameters()])


# (method, its kwargs, T, absent tasks, the kwargs the present rows alone are given)
CASES = [
    ("trimmed_mean", {"trim_number": 1}, 3, {1}, {"trim_number": 0}),  # 2 present: nothing can be trimmed
    ("trimmed_mean", {"trim_number": 1}, 4, {0}, {"trim_number": 1}),  # 3 present: trim_number 1 still fits
    ("trimmed_mean", {"trim_number": 2}, 5, {2, 4}, {"trim_number": 1}),  # 3 present: trim 1 per side
    ("krum", {"n_byzantine": 1}, 4, {2}, {"n_byzantine": 0}),  # 3 present < f + 3: f lowered to 0
    ("krum", {"n_byzantine": 1}, 5, {0}, {"n_byzantine": 1}),  # 4 present: f = 1 still fits
    ("krum", {"n_byzantine": 1, "n_selected": 3}, 4, {1, 3}, {"n_byzantine": 0, "n_selected": 2}),
]


@pytest.mark.parametrize("name, kw, T, absent, kw_present", CASES)
def test_absent_tasks_are_left_out_as_if_only_the_present_were_given(name, kw, T, absent, kw_present):
    trunk, heads, x = _setup(T)
    lowered = kw_present != kw
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = _step(awloss.get(name, **kw), trunk, heads, x, absent)
    relevant = [w for w in seen if name.split("_")[0].lower() in str(w.message).lower() and "warned once" in str(w.message)]
    assert len(relevant) == (1 if lowered else 0), [str(w.message) for w in seen]
    expected = awloss.get(name, **kw_present)(_jacobian_of_present(trunk, heads, x, absent))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, kw, T, absent", [(c[0], c[1], c[2], c[3]) for c in CASES if c[1] != c[4]])
def test_the_lowered_parameter_is_warned_once_per_instance(name, kw, T, absent):
    trunk, heads, x = _setup(T)
    agg = awloss.get(name, **kw)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):
            _step(agg, trunk, heads, x, absent)
    assert sum("warned once" in str(w.message) for w in seen) == 1


@pytest.mark.parametrize("name, kw, T", [("trimmed_mean", {"trim_number": 1}, 3), ("krum", {"n_byzantine": 1}, 4)])
def test_a_zero_row_given_directly_is_an_absent_task(name, kw, T):
    """The same rule for a Jacobian with a zero row (a task whose loss does not reach these parameters)."""
    J = torch.randn(T, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    J[1] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = awloss.get(name, **kw)(J)
    lowered = {"trim_number": 0} if name == "trimmed_mean" else {"n_byzantine": 0}
    torch.testing.assert_close(got, awloss.get(name, **lowered)(J[[i for i in range(T) if i != 1]]))
