"""The gramian engine's float32 Gramian on accelerators: a deferred check that no task's squared norm underflowed.

``G = JJᵀ`` squares the gradients (see :mod:`awloss.aggregation._precision`): a task whose gradient entries
are all below ~1e-23 gets ``G_tt = 0`` in float32 and would be taken for an absent task. On the CPU every
engine redoes such a ``G`` in float64 (a host read, free there); on accelerators the Jacobian engines compute
``G`` in float64 outright, while the gramian engine keeps float32 (float64 would redo its costliest products)
and records :func:`range_flag`, read one step later, with :func:`report` naming the task.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..aggregation._precision import UNDERFLOW, low


def underflow_check(G: Tensor, n: int, rows: list[Tensor]) -> tuple[Tensor, Callable[[object], None]]:
    """The deferred check on the float32 ``G`` of ``n`` columns made of ``rows`` (tensors ``[T, ...]``): a 0-dim
    bool flag (no host read), false when a task with a non-zero gradient has a low squared norm, and the report
    that names it. (An overflow makes ``G`` infinite, which the aggregator's own finiteness check reports.)"""
    T = G.shape[0]
    nonzero = torch.stack([x.reshape(T, -1).ne(0).any(1) for x in rows]).any(0)
    bad = low(G, n) & nonzero

    def raise_it(_: object) -> None:
        tasks = bad.nonzero().flatten().tolist()
        raise ValueError(
            "awloss.backward(method='gramian') on an accelerator computes the Gramian in float32, and the squared "
            f"gradient norms of task(s) {tasks} fell below its range (~{n * UNDERFLOW:.0e} for {n} parameters): "
            "they would count as absent tasks. Scale those losses up, or use method='loop' (float64 Gramian)."
        )

    return ~bad.any(), raise_it
