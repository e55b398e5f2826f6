"""The representation engine (MGDA-UB style): per-task gradients of a shared feature ``z``, not of the parameters.

The Jacobian is ``J_z[T, *z.shape]``, taken through the heads only; the aggregated ``update_z`` is then
back-propagated once through the trunk by one backward of ``ΣLᵢ`` whose gradient at ``z`` is replaced by
``update_z``. So the trunk below ``z`` receives ``(∂z/∂θ)ᵀ update_z``, and every path from a shared
parameter to the losses that bypasses ``z`` (a U-Net skip, a head that also reads an earlier layer)
adds its ``∇ΣLᵢ``, like the heads, which receive ``∇ΣLᵢ`` in the same pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._batched import batched_grads
from ._engine import Engine, Jacobian, guarded
from ._gather import Losses
from ._graph import Walk, walk
from ._loop import grad_loop


class RepresentationEngine(Engine):
    """``representation=z``: ``above`` is the walk of the graph above ``z`` (the heads, the shared parameters
    reached bypassing ``z``); ``batched`` picks the batched per-task backward down to ``z``."""

    name = "representation"

    def __init__(self, shared: list[Tensor], z: Tensor, above: Walk, batched: bool, cache: dict[Any, Any]) -> None:
        self.shared, self.z, self.heads, self.batched, self.cache = shared, z, above.leaves, batched, cache
        ids = {id(p) for p in shared}
        met = above.met | walk([z], None, ids).met  # bypassing z | below z
        if z.grad_fn is None and id(z) in ids:
            met.add(id(z))
        if not met:
            raise ValueError(
                "No parameter in `shared_params` is used by the losses (through `representation` or not)."
            )
        self.inputs = [p for p in shared if id(p) in met] + self.heads
        if z.grad_fn is None and id(z) not in ids:  # a leaf representation accumulates its own update
            self.inputs.append(z)
        self.items: list[Tensor] = []

    def jacobian(self, losses: Losses, retain_graph: bool) -> Jacobian:
        self.items = losses.items
        if self.batched:
            (Jz,), _ = guarded(batched_grads, self.items, [self.z], [], True)
        else:
            (Jz,), _ = guarded(grad_loop, self.items, [self.z], [], True, self.cache)
        if Jz is None:
            raise ValueError("The losses do not depend on `representation`.")
        return Jacobian([Jz])

    def write(self, jac: Jacobian, updates: list[Tensor], retain_graph: bool) -> None:
        (update_z,) = updates
        handle = self.z.register_hook(lambda g: update_z.to(g.dtype))
        try:
            torch.autograd.backward(torch.stack(self.items).sum(), inputs=self.inputs, retain_graph=retain_graph)
        finally:
            handle.remove()
