"""The seed's objective ``Σ 0.5/σ_i²·L_i + ln(1 + σ_i²)`` as one autograd node, bit for bit the seed's.

The seed (``Mikoto10032/AutomaticWeightedLoss``) loops over the tasks in Python, ~30 ops per task. Here
each of its elementwise ops runs once on the whole vector (an elementwise op rounds each element as the
0-dim op does, vectorised or not: checked in ``tests/methods/test_awl_seed_kernel.py``), the terms are
summed in the seed's order (left to right from 0; ``torch.sum`` is not: it pairs them), and the backward
replays, vectorised, the ops that autograd runs on the seed's graph:

* ``0.5 / p²`` is ``reciprocal(p²) * 0.5`` (``Tensor.__rtruediv__``); ``1 + p²`` is ``add(p², 1)``;
* ``mul`` backward: ``g·L`` (in the product's dtype, then cast to σ's) and ``g·w``; ``mul`` by the
  scalar: ``g·0.5``; ``reciprocal``: ``-g·(r·r)``; ``log``: ``g / (1 + p²)``; ``pow(p, 2)``:
  ``g·(2·p¹)``; the two ``p[i] ** 2`` of a task reach σ_i as two gradients that the engine adds.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["SeedObjective", "seed_sum"]


def seed_sum(terms: Tensor, index: Tensor | None) -> Tensor:
    """``((0 + t_0) + t_1) + …`` in ``terms``' dtype: the seed's ``loss_sum += term`` order.

    On the CPU ``put_(…, accumulate=True)`` into a 0-dim zero adds the terms one after the other in their
    own dtype (two ops; ``index`` is ``T`` zeros). Elsewhere its order is not defined (atomic adds on
    CUDA), so the terms are added one by one: ``T`` ops (an unbind and ``T - 1`` adds)."""
    if index is not None and terms.device.type == "cpu":
        return terms.new_zeros(()).put_(index, terms, accumulate=True)
    return functools.reduce(operator.add, terms.unbind(0))


class SeedObjective(torch.autograd.Function):
    """``(Σ num_i/p_i²·L_i + ln(1 + p_i²), w)`` with ``w_i = num_i/p_i²``; ``num`` is one float or ``Tensor[T]``.

    Forward + backward: 7 + 9 elementwise ops and the sum (2 ops on the CPU, ``T`` elsewhere)."""

    @staticmethod
    def forward(
        ctx: Any, p: Tensor, losses: Tensor, num: Tensor | float, index: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        sq = p.pow(2)
        r = sq.reciprocal()
        w = r * num
        q = sq + 1
        total = seed_sum(w * losses + torch.log(q), index)
        ctx.save_for_backward(p, losses, r, w, q, num if isinstance(num, Tensor) else None)
        ctx.num = num
        ctx.mark_non_differentiable(w)
        ctx.set_materialize_grads(False)
        return total, w

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor | None, _grad_w: Tensor | None) -> tuple[Tensor | None, ...]:
        p, losses, r, w, q, num_t = ctx.saved_tensors
        num = ctx.num if num_t is None else num_t
        grad_p = grad_l = None
        if grad is None:
            return None, None, None, None
        if ctx.needs_input_grad[0]:
            # mul's backward for w, in the dtype of the seed's 0-dim product (a 0-dim `grad` would not
            # promote a vector), then cast to σ's
            g_w = (grad * losses.to(grad.dtype)).to(p.dtype)
            g_r = (g_w * num).neg_() if num_t is not None else g_w * -num  # -(g·num): exact either way
            g_sq = g_r.mul_(r * r)  # the scalar mul's backward, then reciprocal's: (-g)·(r·r)
            two_p = p * 2.0  # pow's backward: g · (2 · p.pow(1))
            grad_p = g_sq.mul_(two_p).add_((grad.to(p.dtype) / q).mul_(two_p))  # + log's: g / (1 + p²)
        if ctx.needs_input_grad[1]:
            grad_l = grad * w.to(grad.dtype)
        return grad_p, grad_l, None, None
