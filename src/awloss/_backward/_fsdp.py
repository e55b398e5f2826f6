"""The FSDP2 engine (``torch.distributed.fsdp.fully_shard``): per-task gradients of the shards.

One ordinary ``backward()`` per task: FSDP2 all-gathers the parameters as it needs them and reduce-scatters
(averages) each task's gradient over the ranks into the sharded ``.grad``, which is read as this rank's
columns ``J_r[T, n_r]`` of the global batch's Jacobian and cleared. The reduction step then all-reduces the
Gramian ``G = Σ_r J_r J_rᵀ`` (exactly ``JJᵀ``: :func:`._reduce.reduce_jacobian`), every rank computes the
same weights ``w`` from it, and :meth:`FsdpEngine.write` puts this rank's shard of ``wᵀJ`` into the sharded
``.grad`` (added to what was there), so the FSDP2 model's optimizer step works as usual. The task-specific
parameters (sharded or not) accumulate ``∇ΣLᵢ`` over the T passes, as FSDP2 reduces them.

Communication per step: T times FSDP2's own per-backward traffic (the reduce-scatter of the gradients, and
the all-gather of the parameters when they are resharded after the forward), plus one all-reduce of ``T²``
numbers (the Gramian). Only Gramian aggregators are exact from the shards; the others raise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._engine import Engine, Jacobian
from ._gather import Losses

_UNSUPPORTED = (
    "awloss.backward under FSDP2 (fully_shard) does not support `representation=` or a GradScaler yet: pass the "
    "shared parameters (a Gramian aggregator, e.g. awloss.get('upgrad')) without them, or use DDP."
)


def check_fsdp(shared: list[Tensor], aggregator: Any, representation: Tensor | None, scale: float | None) -> Any:
    """The device mesh of the sharded ``shared`` parameters; raise ``NotImplementedError`` for what the shards
    cannot give exactly (naming what works instead)."""
    from torch.distributed.tensor import DTensor

    name = type(aggregator).__name__
    if representation is not None or scale is not None:
        raise NotImplementedError(_UNSUPPORTED)
    if not hasattr(aggregator, "gramian_weights"):
        raise NotImplementedError(
            f"awloss.backward under FSDP2 (fully_shard) supports the Gramian aggregators (the weights depend on "
            f"G = JJᵀ only, which the shards give exactly); {name} needs the whole Jacobian, which FSDP2 shards "
            "across the ranks. Use a Gramian aggregator (e.g. awloss.get('upgrad') or 'mgda'), DDP, or a "
            "loss-level weighting (they run under FSDP2 unchanged)."
        )
    if getattr(aggregator, "state_per_column", False):
        raise NotImplementedError(
            f"{name} keeps state per column of the Jacobian, which FSDP2 shards across the ranks: awloss.backward "
            "does not support it under FSDP2; use DDP or another aggregator."
        )
    meshes = {id(p.device_mesh): p.device_mesh for p in shared if isinstance(p, DTensor)}
    if len(meshes) != 1 or next(iter(meshes.values())).ndim != 1 or not all(isinstance(p, DTensor) for p in shared):
        raise NotImplementedError(
            "awloss.backward under FSDP2 needs every shared parameter sharded by fully_shard on one 1-D device mesh "
            "(got a mix of sharded and plain parameters, or several / multi-dimensional meshes)."
        )
    return next(iter(meshes.values()))


class FsdpEngine(Engine):
    """Shared parameters sharded by FSDP2: blocks ``[T, *local_shape]`` of this rank's shards (see the module)."""

    name = "fsdp2"

    def __init__(self, shared: list[Tensor], mesh: Any) -> None:
        self.shared, self.mesh = shared, mesh
        self.saved: list[Tensor | None] = []
        self.used: list[bool] = []

    def jacobian(self, losses: Losses, retain_graph: bool) -> Jacobian:
        items, shared = losses.items, self.shared
        T = len(items)
        self.saved = [p.grad for p in shared]
        for p in shared:
            p.grad = None
        rows: list[list[Tensor | None]] = []
        for t, loss in enumerate(items):
            loss.backward(retain_graph=retain_graph or t < T - 1)  # FSDP2 reduce-scatters into the sharded .grad
            rows.append([None if p.grad is None else p.grad.to_local() for p in shared])  # type: ignore[attr-defined]
            for p in shared:
                p.grad = None
        locals_ = [p.to_local() for p in shared]  # type: ignore[attr-defined]
        self.used = [any(r[k] is not None for r in rows) for k in range(len(shared))]
        ref = next((g for r in rows for g in r if g is not None), None)
        dtype = ref.dtype if ref is not None else locals_[0].dtype
        blocks = [
            torch.stack([torch.zeros_like(x, dtype=dtype) if (g := r[k]) is None else g.to(dtype) for r in rows])
            for k, x in enumerate(locals_)
        ]
        return Jacobian(blocks, shard_group=self.mesh.get_group())

    def write(self, jac: Jacobian, updates: list[Tensor], retain_graph: bool) -> None:
        from torch.distributed.tensor import DTensor

        for p, u, used, old in zip(self.shared, updates, self.used, self.saved):
            if not used:
                p.grad = old
                continue
            g = DTensor.from_local(u.to(p.dtype), self.mesh, p.placements,  # type: ignore[attr-defined]
                                   shape=p.shape, stride=p.stride())
            p.grad = g if old is None else old + g
