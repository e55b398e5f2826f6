"""Every cross-rank reduction of :func:`awloss.backward`, in one place (no-ops outside ``torch.distributed``).

Two collectives per step: the loss values (before the aggregator's loss transform, so DB-MTL's log sees
the global value) and, in one call, the per-task gradients of the shared parameters with the heads'
gradients. The collectives themselves are functions of :mod:`awloss.distributed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from .. import distributed

if TYPE_CHECKING:
    from ._engine import Jacobian


def reduce_loss_values(items: list[Tensor], names: list[str] | None, error: BaseException | None) -> list[Tensor]:
    """Loss values of the global batch (mean over the ranks; gradient paths local). Raises on every rank when
    one rank has a local ``error`` (a non-finite loss) or the ranks' tasks differ."""
    if not distributed.is_distributed():
        return items
    return distributed.sync_task_losses(items, names, error)


def reduce_jacobian(jac: Jacobian, T: int) -> Jacobian:
    """The Jacobian of the global batch and the heads' mean gradients, in one layout on every rank (a block
    unused on one rank is zero-filled) and one collective; then the blocks no rank used are dropped."""
    if jac.params is None:  # the flat-buffer engines (never under DDP)
        return jac
    if distributed.is_distributed():
        jac.blocks, jac.head_grads = distributed.reduce_jacobian(jac.blocks, jac.head_grads, jac.params, jac.heads, T)
    kept = [(p, b) for p, b in zip(jac.params, jac.blocks) if b is not None]
    if not kept:
        raise ValueError("No parameter in `shared_params` is used by the losses.")
    jac.params, jac.blocks = [p for p, _ in kept], [b for _, b in kept]
    return jac
