"""A zero row of the Jacobian (an absent task, or one whose loss does not reach these parameters) gets the
same answer on every device: the CPU (where a host read is free) and the accelerators' code path, forced
here on the CPU with :func:`awloss._checks.strict_host_reads` (no optional host read), must agree.

The methods whose solve takes a device mask of the present rows (``masked_rows``) leave the zero rows out
with no host read anywhere: their answer is also the one of the ``T - 1`` task problem. The others
(``DEVICE_DEPENDENT``) still leave zero rows out on the CPU only and say so in their docstring."""

from __future__ import annotations

import copy

import pytest
import torch

import awloss
from awloss import _checks
from awloss.aggregation import GramianAggregator

AGGREGATORS = awloss.available("aggregator")


def _device_dependent(cls) -> bool:
    """Declared so: zero rows left out by the base's host read (CPU only) rather than by a device mask.

    That is the default of a user's own method (``examples/custom_method.py``), which keeps working; every
    built-in method must be sync-free (checked below)."""
    if cls.zero_rows != "left_out":
        return False
    if issubclass(cls, GramianAggregator):
        return not getattr(cls, "masked_rows", False)
    return not cls.stateful


# Left out on the CPU only (a host read finds the rows), kept elsewhere.
DEVICE_DEPENDENT = {n for n in AGGREGATORS if _device_dependent(awloss.get_class(n))}


def jacobians(dtype, conflicts=(False, True)):
    g = torch.Generator().manual_seed(0)
    for T in (2, 3, 4, 5):
        for zeros in ((0,), (T - 1,), (0, T - 1)):
            if len(zeros) >= T:
                continue
            for conflict in conflicts:
                J = torch.randn(T, 7, generator=g, dtype=torch.float64).abs()  # no two rows conflict
                if conflict:
                    J[1:] -= 1.5 * J[0]
                J[list(zeros)] = 0.0
                yield T, zeros, J.to(dtype)


def run(agg, J, strict):
    torch.manual_seed(0)  # the random methods draw alike
    with _checks.strict_host_reads() if strict else _nullcontext():
        out = agg(J)
        w = agg.weights if agg.weighted else None
    agg.verify()
    return out, w


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def make(name, T):
    return awloss.get_class(name)._make_example(T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", AGGREGATORS)
def test_zero_rows_get_the_same_answer_on_every_device(name, dtype):
    if name in DEVICE_DEPENDENT:
        pytest.skip("documented: zero rows are left out on the CPU only")
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-7, "atol": 1e-9}
    for T, zeros, J in jacobians(dtype):
        first = make(name, T)
        second = copy.deepcopy(first)
        for step in range(2):  # a stateful method's second call too
            cpu, w_cpu = run(first, J, strict=False)
            acc, w_acc = run(second, J, strict=True)
            where = f"{name}, T={T}, zero rows {zeros}, call {step}"
            torch.testing.assert_close(acc, cpu, **tol, msg=lambda m: f"{where}: update\n{m}")
            if w_cpu is not None:
                torch.testing.assert_close(w_acc, w_cpu, **tol, msg=lambda m: f"{where}: weights\n{m}")


MASKED = [n for n in AGGREGATORS if getattr(awloss.get_class(n), "masked_rows", False)]


@pytest.mark.parametrize("name", MASKED)
def test_masked_methods_answer_the_problem_without_the_zero_rows(name):
    """The oracle: the same method on the Jacobian without its zero rows (the ``T - 1`` task problem), draw
    for draw for the random ones (PCGrad's and GradVac's visiting orders)."""
    conflicts = (False, True)
    for T, zeros, J in jacobians(torch.float64, conflicts):
        present = [i for i in range(T) if i not in zeros]
        with _checks.strict_host_reads():
            torch.manual_seed(0)
            agg = make(name, T)
            out = agg(J)
            w = agg.weights
        torch.manual_seed(0)
        sub = make(name, len(present))
        expected = sub(J[present])
        torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-9, msg=lambda m: f"{name} T={T} {zeros}\n{m}")
        assert torch.all(w[list(zeros)] == 0), (name, w)


def test_every_built_in_method_is_sync_free():
    """A user's method may keep the base's CPU-only row finding; ours must give one answer on every device."""
    ours = {n for n in DEVICE_DEPENDENT if awloss.get_class(n).__module__.startswith("awloss.")}
    assert not ours, f"built-in methods that leave zero rows out on the CPU only: {sorted(ours)}"


def test_mgda_with_an_absent_task_is_not_zero_on_any_device():
    """The case that differed: a zero row is in the convex hull, so MGDA kept with it returns 0."""
    J = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    for strict in (False, True):
        out, w = run(awloss.get("mgda"), J, strict)
        assert out.abs().sum() > 0 and w[2] == 0, (strict, out, w)


def test_graddrop_with_a_per_task_leak_and_a_zero_row():
    """Old main left the zero row out on the CPU, and then refused the per-task `leak` (3 values, 2 rows)."""
    J = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    J[1] = 0
    leak = torch.tensor([0.1, 0.2, 0.3])
    for strict in (False, True):
        out, _ = run(awloss.get("graddrop", leak=leak), J, strict)
        torch.manual_seed(0)
        ref = awloss.get("graddrop", leak=leak[[0, 2]])(J[[0, 2]])
        torch.testing.assert_close(out, ref)
