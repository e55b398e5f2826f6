"""The batched engine: one vectorised backward (``is_grads_batched``) for all tasks at once."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from ._engine import BlocksEngine


def batched_grads(
    items: list[Tensor], inputs: list[Tensor], extra: list[Tensor], retain: bool
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """Per-task gradients of ``inputs`` (``[T, *shape]``, ``None`` if unused) by one vmap-ed backward with the
    rows of the identity as gradient outputs, and ``∇ΣLᵢ`` of ``extra`` (the heads) by a second small one.

    ``items`` are the scalar losses as given (never stacked: backpropagating through a stack would run
    every head for every task).
    """
    T = len(items)
    eye = torch.eye(T, dtype=items[0].dtype, device=items[0].device)
    out = torch.autograd.grad(
        items,
        inputs,
        [eye[:, t] for t in range(T)],
        retain_graph=retain or bool(extra),
        is_grads_batched=True,
        allow_unused=True,
    )
    heads: list[Tensor | None] = [None] * len(extra)
    if extra:
        heads = list(torch.autograd.grad(cast(Tensor, sum(items)), extra, retain_graph=retain, allow_unused=True))
    return list(out), heads


class BatchedEngine(BlocksEngine):
    """``method="batched"`` (what ``"auto"`` picks on accelerators when the graph can batch)."""

    name = "batched"

    def grads(self, items: list[Tensor], retain: bool) -> tuple[list[Tensor | None], list[Tensor | None]]:
        return batched_grads(items, self.shared, self.heads, retain)
