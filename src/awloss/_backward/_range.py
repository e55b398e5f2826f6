"""Whether a Gramian computed in float32 is as good as a float64 one (else the engines recompute it).

``G = JJᵀ`` squares the gradients: float32 holds gradients from 1e-38 to 3e38, but their squares only from
about 1e-19 to 1e19. A task whose gradient entries are all below ~1e-23 gets ``G_tt = 0`` in float32 and
would be taken for an absent task (weight 0; with every task that small, a zero update), one at 1e20 an
infinite ``G``. On the CPU (a host read is free) the engines compute ``G`` in float32 (the fast product),
ask :func:`exact_enough`, and redo it in float64 when it says no; on accelerators the Jacobian engines
compute ``G`` in float64 outright (the aggregators' own choice, small next to the ``T`` backward passes there)
and the gramian engine records :func:`range_flag` as a deferred check.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: per column of ``J``: a squared norm of at least ``n·2⁻¹⁰⁰`` has its underflowed (subnormal) products below
#: ``2⁻²⁶`` of it (a float32 subnormal is below ``2⁻¹²⁶``), and its cross products the same by Cauchy-Schwarz
UNDERFLOW = 2.0**-100


def low(G: Tensor, n: int) -> Tensor:
    """``Tensor[T]`` of bool: the squared norms too small for float32 (0 included: a zero row, or one that underflowed)."""
    return G.diagonal() < n * UNDERFLOW


def exact_enough(G: Tensor, n: int, nonzero: Callable[[int], bool]) -> bool:
    """``True`` when ``G`` (a float32 Gramian of ``n`` columns; read on the host) needs no float64 recompute:
    it is finite and every squared norm is either in float32's safe range or 0 for a row that is zero
    (``nonzero(t)`` says whether row ``t`` of ``J`` has a non-zero entry; asked only of the rows with ``G_tt`` low).
    """
    if G.dtype == torch.float64:
        return True
    flags = torch.cat([torch.isfinite(G).all().reshape(1), low(G, n), G.diagonal() == 0]).tolist()
    if not flags[0]:
        return False
    T = G.shape[0]
    return all(flags[1 + T + t] and not nonzero(t) for t in range(T) if flags[1 + t])


def range_flag(G: Tensor, n: int, nonzero_rows: Tensor) -> Tensor:
    """The device-side verdict on underflow (0-dim bool, no host read): no task with a non-zero gradient
    (``nonzero_rows``, ``Tensor[T]`` of bool) has a low squared norm. (An overflow makes ``G`` infinite, which
    the aggregator's own finiteness check reports.)"""
    return ~(low(G, n) & nonzero_rows).any()


def report(G: Tensor, n: int, nonzero_rows: Tensor) -> Callable[[object], None]:
    """The error of a failed :func:`range_flag` (raised one step late by the deferred checks)."""

    def raise_it(_: object) -> None:
        tasks = (low(G, n) & nonzero_rows).nonzero().flatten().tolist()
        raise ValueError(
            "awloss.backward(method='gramian') on an accelerator computes the Gramian in float32, and the squared "
            f"gradient norms of task(s) {tasks} fell below its range (~{n * UNDERFLOW:.0e} for {n} parameters): "
            "they would count as absent tasks. Scale those losses up, or use method='loop' (float64 Gramian)."
        )

    return raise_it
