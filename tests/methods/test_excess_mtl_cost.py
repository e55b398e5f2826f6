"""ExcessMTL's step is memory-bound: every pass over its ``T x n`` float64 statistics costs about the floor of a
per-task backward at small widths. It once took 12 such passes (``isfinite`` unrolled into abs/ne/eq/mul, a
``zeros_like`` + ``where``, an out-of-place float64 ``sqrt`` and ``div``: ~3x TorchJD's step on the CPU); it
needs 7 (copy to float64, square_, nan_to_num_, add_, + eps, rsqrt_, mul_)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import awloss

T, N = 4, 1000
SLOW = {"aten.sqrt.default", "aten.where.self", "aten.isfinite.default", "aten.div.Tensor"}


class FullSizeOps(TorchDispatchMode):
    """The ops whose output has the Jacobian's ``T x n`` elements (the passes that cost time)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.numel() == T * N and not func.is_view:  # views: no pass
            self.ops.append(str(func))
        return out


def full_size_ops(agg, J) -> list[str]:
    with FullSizeOps() as c:
        agg(J)
    return c.ops


def test_a_call_makes_at_most_seven_full_size_passes_and_none_of_the_slow_kinds():
    agg = awloss.get("excess_mtl")
    J = torch.randn(T, N, generator=torch.Generator().manual_seed(0))
    for _ in range(3):  # past the first call (buffers) and the baseline-setting one
        agg(J)
    ops = full_size_ops(agg, J)
    assert len(ops) <= 7, ops
    assert not SLOW & set(ops), ops


def test_non_finite_entries_still_stay_out_of_the_statistics():
    agg = awloss.get("excess_mtl")
    J = torch.randn(T, N, generator=torch.Generator().manual_seed(1))
    agg(J)
    bad = J.clone()
    bad[2, 5], bad[1, 7] = float("nan"), float("inf")
    agg(bad)  # its (deferred) error would come at the next call; here we look at the state
    S = agg.sq_grad_sum
    assert torch.isfinite(S).all()
    assert S[2, 5] == J[2, 5].double() ** 2 and S[1, 7] == J[1, 7].double() ** 2
