"""Every cross-rank reduction of :func:`awloss.backward`, in one place (no-ops outside ``torch.distributed``).

Two collectives per step: the loss values (before the aggregator's loss transform, so DB-MTL's log sees
the global value; with the per-task presence counts when a task is absent on some rank) and, in one call,
the per-task gradients of the shared parameters with the heads' gradients (under FSDP2: the Gramian of the
shards instead). The collectives themselves are functions of :mod:`awloss.distributed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from .. import distributed

if TYPE_CHECKING:
    from ._engine import Jacobian


def reduce_loss_values(
    items: list[Tensor], names: list[str] | None, error: BaseException | None, present: list[bool]
) -> tuple[list[Tensor], list[bool]]:
    """Loss values of the global batch: each task's mean over the ranks where it is present (its gradient path
    scaled to match, so the Jacobian's mean over the ranks is that too), and the tasks present on some rank.
    Raises on every rank when one rank has a local ``error`` (a non-finite loss) or the ranks' tasks differ."""
    if not distributed.is_distributed():
        return items, present
    return distributed.sync_task_losses(items, names, error, present=present)


def _gramian(blocks: list[Tensor], T: int) -> Tensor:
    """This rank's share of ``JJᵀ``, in float64 on every rank (the ranks' sums must agree in dtype, so no
    data-dependent float32 shortcut here)."""
    from ._aggregate import exact_gramian

    return exact_gramian([b.reshape(T, -1) for b in blocks])


def reduce_jacobian(jac: Jacobian, T: int) -> Jacobian:
    """The Jacobian of the global batch and the heads' mean gradients, in one layout on every rank (a block
    unused on one rank is zero-filled) and one collective; then the blocks no rank used are dropped. Under
    FSDP2 (``jac.shard_group``) the Jacobian stays sharded and its Gramian is reduced instead: one all-reduce
    of ``T²`` numbers."""
    if jac.shard_group is not None:  # FSDP2: this rank's columns; the Gramian of the whole J is their sum
        jac.gramian = distributed.all_reduce_sum(_gramian(jac.blocks, T), jac.shard_group)
        return jac
    if jac.params is None:  # the flat-buffer engines (never under DDP)
        return jac
    if distributed.is_distributed():
        jac.blocks, jac.head_grads = distributed.reduce_jacobian(jac.blocks, jac.head_grads, jac.params, jac.heads, T)
    kept = [(p, b) for p, b in zip(jac.params, jac.blocks) if b is not None]
    if not kept:
        raise ValueError("No parameter in `shared_params` is used by the losses.")
    jac.params, jac.blocks = [p for p, _ in kept], [b for _, b in kept]
    return jac
