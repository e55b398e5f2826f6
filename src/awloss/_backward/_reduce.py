"""Every cross-rank reduction of :func:`awloss.backward`, in one place (no-ops outside ``torch.distributed``).

Two collectives per step: the loss values (before the aggregator's loss transform, so DB-MTL's log sees
the global value) and, in one call, the per-task gradients of the shared parameters with the heads'
gradients. The collectives themselves are functions of :mod:`awloss.distributed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..distributed import all_reduce_mean, all_reduce_mean_many, is_distributed

if TYPE_CHECKING:
    from ._engine import Jacobian


def reduce_loss_values(items: list[Tensor], names: list[str] | None) -> list[Tensor]:
    """Loss values of the global batch (mean over the ranks); the gradient paths stay local."""
    if not is_distributed():
        return items
    values = all_reduce_mean(torch.stack([x.detach() for x in items]))
    return [v + (x - x.detach()) for v, x in zip(values.unbind(0), items)]


def reduce_jacobian(jac: Jacobian) -> Jacobian:
    """The Jacobian of the global batch and the heads' mean gradients: one collective for both."""
    if not is_distributed():
        return jac
    kept = [g for g in jac.head_grads if g is not None]
    reduced = all_reduce_mean_many(jac.blocks + kept)
    n = len(jac.blocks)
    it = iter(reduced[n:])
    jac.blocks = reduced[:n]
    jac.head_grads = [None if g is None else next(it) for g in jac.head_grads]
    return jac
