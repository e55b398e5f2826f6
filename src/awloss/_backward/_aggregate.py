"""Step 5 of :func:`awloss.backward`: the aggregator applied to the (reduced) Jacobian, and ``.grad`` writes."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from .. import _checks
from ..aggregation import _solvers
from ..aggregation._base import Aggregator, GramianAggregator
from ..aggregation._precision import gramian_fits
from ._engine import Jacobian


def gramian(J: Tensor) -> Tensor:
    """``J Jᵀ``. On the CPU for 8 <= T <= 16, the lower triangle by blocks of 4 rows, mirrored: a BLAS
    ``[T, n] x [n, T]`` product with small ``T`` runs its micro-kernel half empty; blocks of 4 rows do less
    than ~2/3 of the work at a better rate (0.37 ms instead of 0.53 ms for T = 10, n = 82k, one thread)."""
    T = J.shape[0]
    if J.device.type != "cpu" or not 8 <= T <= 16:
        return J @ J.T
    G = J.new_empty(T, T)
    for i in range(0, T, 4):
        torch.mm(J[i : i + 4], J[: i + 4].T, out=G[i : i + 4, : i + 4])
    return G.tril() + G.tril(-1).T


def exact_gramian(flat: list[Tensor]) -> Tensor:
    """``G`` of the blocks ``[T, n_k]`` side by side in float64 (:func:`~awloss.aggregation._solvers.gramian`)."""
    return sum((_solvers.gramian(f) for f in flat[1:]), _solvers.gramian(flat[0]))


def gramian_of(flat: list[Tensor]) -> Tensor:
    """``G`` of the blocks ``[T, n_k]`` side by side, as exact as the aggregators' own (float64) Gramian.

    On the CPU from float32 blocks: the fast float32 product, redone in float64 only where it left float32's
    range (a host read, free there; see :mod:`._range`). Elsewhere, and for float16/bfloat16 blocks: float64
    (by chunks of columns). Float64 blocks: their own product."""
    dtype = flat[0].dtype
    if any(f.dtype != dtype for f in flat) or dtype not in (torch.float32, torch.float64):
        return exact_gramian(flat)
    if dtype == torch.float32 and not _checks.host_reads_are_free(flat[0]):
        return exact_gramian(flat)  # accelerators: float64 outright (no host read to choose)
    G = sum((gramian(f) for f in flat[1:]), gramian(flat[0]))
    n = sum(f.shape[1] for f in flat)
    return G if gramian_fits(G, n, lambda t: any(bool(f[t].any()) for f in flat)) else exact_gramian(flat)


def _aggregate(aggregator: Aggregator, blocks: list[Tensor], T: int) -> list[Tensor]:
    """Aggregate the per-input blocks ``[T, *shape]``; return the update of each block."""
    flat = [b.reshape(T, -1) for b in blocks]
    if isinstance(aggregator, GramianAggregator):
        w = aggregator.gramian_weights(gramian_of(flat), flat[0].dtype)
        return [torch.tensordot(w.to(b.dtype), b, dims=1) for b in blocks]
    J = flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)
    update = aggregator(J)
    sizes = [f.shape[1] for f in flat]
    return [u.view(b.shape[1:]) for u, b in zip(update.split(sizes), blocks)]


def _summed(aggregator: GramianAggregator, grad: Tensor, present: list[bool]) -> list[Tensor]:
    """GradMean/GradSum: constant weights (their Gramian is never looked at) times ``∇ΣLᵢ``; an absent task
    (a zero row) is left out and gets weight 0, as :class:`~awloss.aggregation.Aggregator` does for a Jacobian.
    (A present task whose loss reaches no shared parameter is counted: finding it would take its own backward.)"""
    aggregator._checks = []
    k = sum(present)
    sub = aggregator.weights_from_gramian(grad.new_zeros(k, k)).to(grad.dtype)
    w = sub if k == len(present) else grad.new_zeros(len(present)).masked_scatter(
        torch.tensor(present, device=grad.device), sub
    )
    aggregator._set_weights(w)
    mode = _checks.check_mode(aggregator)
    if mode is not None:  # a device flag, read at the next step
        _checks.push(aggregator, grad.sum(), _report_sum_grad, mode)
    return [grad * sub[0]] if k else [torch.zeros_like(grad)]


def _report_sum_grad(_: Any) -> None:
    raise ValueError("The gradient of the sum of the losses contains NaN or inf (or overflows float).")


def aggregate(aggregator: Aggregator, jac: Jacobian, T: int, scale: float | None) -> tuple[list[Tensor], bool]:
    """The update of every block, and whether the step overflowed (GradScaler: then nothing is aggregated).

    With a GradScaler the blocks are unscaled, aggregated and re-scaled, so methods whose update does not
    scale with ``J`` stay exact; non-finite blocks pass through (inf/NaN reach ``.grad`` and ``scaler.step``
    skips the step, the aggregator's state untouched).
    """
    if jac.summed:
        return _summed(aggregator, jac.blocks[0], jac.present), False  # type: ignore[arg-type]
    if jac.gramian is not None:
        gram = cast(GramianAggregator, aggregator)  # (the gramian and FSDP2 engines serve only these)
        if not jac.blocks:  # the gramian engine: the weights alone (it writes Σ wᵢ∇Lᵢ)
            G = jac.gramian
            mode = _checks.check_mode(aggregator)
            if jac.check is not None and mode is not None:  # on accelerators: did its float32 G underflow?
                flag, report = jac.check()
                _checks.push(aggregator, flag, report, mode)
            if scale is None:
                return [gram.gramian_weights(G, jac.dtype)], False
            if not bool(torch.isfinite(G).all()):
                return [G.new_ones(T)], True
            return [gram.gramian_weights(G / (scale * scale), jac.dtype)], False
        # a sharded Jacobian (FSDP2): the weights from the reduced Gramian
        w = gram.gramian_weights(jac.gramian, jac.blocks[0].dtype)
        return [torch.tensordot(w.to(b.dtype), b, dims=1) for b in jac.blocks], False
    if scale is None:
        return _aggregate(aggregator, jac.blocks, T), False
    if not bool(torch.stack([torch.isfinite(b).all() for b in jac.blocks]).all()):
        return [b.sum(0) for b in jac.blocks], True
    return [u * scale for u in _aggregate(aggregator, [b / scale for b in jac.blocks], T)], False
