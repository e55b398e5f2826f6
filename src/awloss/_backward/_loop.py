"""The loop engines: one backward pass per task.

``loop`` runs full ``backward`` passes whose shared gradients land straight in one flat ``[T, n]`` buffer
(the heads accumulate ``∇ΣLᵢ`` as in ``Tensor.backward``); ``grad_loop`` makes one ``autograd.grad``
per task (no ``AccumulateGrad`` hook fires, so DDP's reducer stays out of it; also when ``task_params``
are given) and copies into per-parameter buffers. Both reuse their buffers across calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from ._engine import BlocksEngine, Engine, Jacobian, accumulate, guarded, missing_params
from ._gather import Losses

_ENGINE = getattr(torch.autograd.Variable, "_execution_engine", None)  # what torch.autograd.backward calls


def _key(params: list[Tensor], T: int) -> tuple[Any, ...]:
    return tuple((tuple(p.shape), p.dtype, p.device) for p in params) + (T,)


def loop_backward(
    items: list[Tensor], shared: list[Tensor], retain: bool, cache: dict[Any, Any]
) -> tuple[Tensor, list[bool]]:
    """One full ``backward`` per task; returns the flat ``[T, n]`` buffer and which parameters got a gradient.

    Before task ``t``'s backward, each shared parameter's ``.grad`` is set to its slice of row ``t`` of the
    buffer (zeroed row by row), so autograd's ``AccumulateGrad`` adds the gradient in place, straight into
    the Jacobian: no copy and no Python call per parameter and task. Which parameters receive a gradient
    is recorded by a post-accumulate hook removed as soon as it fired once. (Parameters whose dtype or
    layout differs from the buffer's take a copying hook instead.)
    """
    T = len(items)
    key = _key(shared, T)
    entry = cache.get(key)
    if entry is None:
        cache.clear()
        dtype = shared[0].dtype
        for p in shared[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        flat = torch.empty(T, sum(p.numel() for p in shared), dtype=dtype, device=shared[0].device)
        views, off = [], 0
        for p in shared:
            views.append([flat[t, off : off + p.numel()].view(p.shape) for t in range(T)])
            off += p.numel()
        direct = [p.dtype == dtype and p.layout == torch.strided for p in shared]
        entry = cache[key] = (flat, views, direct)
    flat, views, direct = entry
    used = [False] * len(shared)
    saved = [p.grad for p in shared]
    current = [0]

    def make_mark(k: int) -> Callable[[Tensor], None]:
        def mark(p: Tensor) -> None:
            used[k] = True

        return mark

    def make_copy(k: int) -> Callable[[Tensor], None]:
        def copy(p: Tensor) -> None:
            views[k][current[0]].copy_(cast(Tensor, p.grad))  # (a post-accumulate hook: .grad is set)
            used[k] = True
            p.grad = None

        return copy

    engine = _ENGINE if items[0].layout == torch.strided and type(items[0]) is Tensor else None
    if engine is not None and torch.compiler.is_compiling():
        engine = None
    one = items[0].new_ones(())
    handles: dict[int, Any] = {}
    try:
        for k, p in enumerate(shared):
            p.grad = None
            handles[k] = p.register_post_accumulate_grad_hook(make_mark(k) if direct[k] else make_copy(k))
        marking = [k for k in range(len(shared)) if direct[k]]
        for t, loss in enumerate(items):
            current[0] = t
            flat[t].zero_()
            for k in marking:
                shared[k].grad = views[k][t]
            keep = retain or t < T - 1
            if engine is None:
                torch.autograd.backward(loss, retain_graph=keep)
            else:  # torch.autograd.backward minus its per-call Python checks (~40 µs a task)
                engine.run_backward((loss,), (one,), keep, False, (), True, True)
            if any(used[k] for k in marking):
                for k in marking:
                    if used[k] and k in handles:
                        handles.pop(k).remove()
    finally:
        for h in handles.values():
            h.remove()
        for p, g in zip(shared, saved):
            p.grad = g
    return flat, used


def grad_loop(
    items: list[Tensor], inputs: list[Tensor], extra: list[Tensor], retain: bool, cache: dict[Any, Any]
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """Per-task gradients of ``inputs`` as ``[T, *shape]`` blocks (``None`` if unused), ``∇ΣLᵢ`` of ``extra``."""
    T = len(items)
    n_in = len(inputs)
    seen = [False] * n_in
    heads: list[Tensor | None] = [None] * len(extra)
    key = _key(inputs, T)
    bufs = cache.get(key)
    if bufs is None:
        cache.clear()
        bufs = cache[key] = [torch.empty((T, *p.shape), dtype=p.dtype, device=p.device) for p in inputs]
    for t, loss in enumerate(items):
        gs = torch.autograd.grad(loss, inputs + extra, retain_graph=retain or t < T - 1, allow_unused=True)
        for k in range(n_in):
            g = gs[k]
            if g is None:
                bufs[k][t].zero_()
            else:
                bufs[k][t].copy_(g)
                seen[k] = True
        for k, g in enumerate(gs[n_in:]):
            if g is not None:
                h = heads[k]
                heads[k] = g if h is None else h + g
    return [b if s else None for b, s in zip(bufs, seen)], heads


class LoopEngine(Engine):
    """``method="loop"`` outside DDP without ``task_params``: full backward passes into one flat buffer."""

    name = "loop"

    def __init__(self, shared: list[Tensor], cache: dict[Any, Any]) -> None:
        self.shared, self.cache = shared, cache
        self.used: list[bool] = []

    def rows(self, losses: Losses) -> list[Tensor]:
        return losses.items

    def jacobian(self, losses: Losses, retain_graph: bool) -> Jacobian:
        flat, self.used = guarded(loop_backward, self.rows(losses), self.shared, retain_graph, self.cache)
        if not any(self.used):
            raise missing_params()
        return Jacobian([flat])

    def write(self, jac: Jacobian, updates: list[Tensor], retain_graph: bool) -> None:
        (update,) = updates
        off = 0
        for p, u in zip(self.shared, self.used):
            if u:
                accumulate(p, update[off : off + p.numel()].view(p.shape))
            off += p.numel()


class GradLoopEngine(BlocksEngine):
    """The loop with ``autograd.grad`` (under DDP, or with ``task_params``): per-parameter blocks and heads."""

    name = "grad_loop"

    def grads(self, items: list[Tensor], retain: bool) -> tuple[list[Tensor | None], list[Tensor | None]]:
        return grad_loop(items, self.shared, self.heads, retain, self.cache)
