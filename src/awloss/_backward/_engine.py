"""Step 2 of :func:`awloss.backward`: the engine that computes the Jacobian, and the contract engines share.

An engine turns the per-task losses into a :class:`Jacobian` (``jacobian``) and writes the aggregated
update back into ``.grad`` (``write``); everything between (the reduction across ranks, the aggregator)
is the pipeline's. Engines: ``loop`` (one backward per task, :mod:`._loop`), ``grad_loop`` (one
``autograd.grad`` per task, under DDP or with ``task_params``), ``batched`` (one vmap-ed backward,
:mod:`._batched`), ``representation`` (per-task gradients of a shared feature, :mod:`._representation`),
``summed`` (GradMean/GradSum: one backward of ``ΣLᵢ``, :mod:`._summed`), ``gramian`` (``G = JJᵀ`` layer by
layer, never ``J``, :mod:`._gram`) and ``fsdp2`` (shared parameters sharded by ``fully_shard``: per-task
gradients of the shards, :mod:`._fsdp`).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._gather import Losses


@dataclass
class Jacobian:
    """``blocks``: per-task gradients, each ``[T, *shape]``: one per entry of ``params`` (``None`` where this
    rank's losses do not reach it, dropped by the reduction step), or, with ``params = None``, one flat
    ``[T, n]`` block of the engine's own layout; ``heads`` and ``head_grads``: the task-specific parameters
    and their ``∇ΣLᵢ`` where the engine computed them; ``summed``: the one block is ``∇ΣLᵢ`` itself
    (constant-weight aggregators), not per-task rows, and ``present`` says which tasks it contains (an
    absent task's zero row is left out of the weights, as the aggregator does on a Jacobian);
    ``shard_group``: the blocks are this rank's columns of a Jacobian sharded over that process group (FSDP2),
    and the reduction step sets ``gramian``, the global ``JJᵀ``, which the aggregation step uses; the gramian
    engine sets ``gramian`` with no blocks at all (the aggregation step then returns the weights alone), and
    ``check``: on accelerators, the deferred check on that Gramian, made on call (see :mod:`._range`), and
    ``dtype``: the weights' dtype (that of the float32 Gramian, where a float64 one was needed)."""

    blocks: list[Any]
    params: list[Tensor] | None = None
    heads: list[Tensor] = field(default_factory=list)
    head_grads: list[Tensor | None] = field(default_factory=list)
    summed: bool = False
    present: list[bool] = field(default_factory=list)
    shard_group: Any = None
    gramian: Tensor | None = None
    check: Any = None
    dtype: torch.dtype | None = None  # the gramian engine: the weights' dtype (G's may be float64)


class Engine:
    """Computes the Jacobian of the shared parameters (or of a representation) and writes ``.grad``."""

    name: ClassVar[str] = ""

    def jacobian(self, losses: Losses, retain_graph: bool) -> Jacobian:  # pragma: no cover - abstract
        raise NotImplementedError

    def write(self, jac: Jacobian, updates: list[Tensor], retain_graph: bool) -> None:  # pragma: no cover
        raise NotImplementedError


_COMPILED_HINT = (
    "The model's backward cannot be {what} (a model compiled with torch.compile's inductor backend, say): "
    "pass `representation=` (the output of the compiled shared trunk; the per-task gradients are then taken "
    "in eager mode through the heads), or compile with `torch._functorch.config.donated_buffer = False` "
    "and pass `method='loop'`."
)


def vmap_failure(e: BaseException) -> bool:
    """Whether ``e`` says that a backward could not run under vmap (a batched backward)."""
    msg = str(e)
    return isinstance(e, (RuntimeError, NotImplementedError)) and (
        "BatchedTensorImpl" in msg or "vmap" in msg or "Batching rule" in msg
    )


def guarded(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` with a clear error for backwards that cannot be batched or replayed."""
    try:
        return fn(*args)
    except (RuntimeError, NotImplementedError) as e:
        msg = str(e)
        if vmap_failure(e):
            first = msg.strip().splitlines()[0][:200] if msg.strip() else type(e).__name__
            raise RuntimeError(
                f"The model's backward cannot be batched with vmap ({first}): pass method='loop'. "
                + _COMPILED_HINT.format(what="batched with vmap")
            ) from e
        if "donated buffers" in msg:
            raise RuntimeError(_COMPILED_HINT.format(what="run twice (its buffers are donated)")) from e
        raise


def missing_params() -> ValueError:
    return ValueError("No parameter in `shared_params` is used by the losses.")


_SAID: set[str] = set()


def auto_batches(device: torch.device) -> bool:
    """Whether ``method="auto"`` prefers the batched backward on ``device`` (not on the CPU: see the benchmark)."""
    return device.type != "cpu"


def batches(method: str, hard: str | None, soft: str | None) -> bool:
    """``"auto"``: batched on accelerators unless the graph cannot batch (then the loop, said once per reason);
    an explicit ``"batched"`` on a graph that certainly cannot batch raises, saying why and what to use."""
    if method == "batched":
        if hard is not None:
            raise ValueError(
                f"Argument `method='batched'` cannot work on this model: it has {hard}. Use method='loop' "
                "(or 'auto', which falls back to the loop by itself)."
            )
        return True
    reason = hard or soft
    if reason is None:
        return True
    if reason not in _SAID:
        _SAID.add(reason)
        warnings.warn(
            f"awloss.backward(method='auto') uses the per-task loop instead of the batched backward: the model "
            f"has {reason}. Pass method='loop' to silence this"
            + ("" if hard else ", or method='batched' to try anyway")
            + ".",
            UserWarning,
            stacklevel=4,
        )
    return False


# Per-aggregator Jacobian buffers, kept OUTSIDE the aggregator: in its ``__dict__`` they were pickled,
# deep-copied and torch.save'd with it, and the copy's buffer no longer aliased its per-parameter views
# while the cache key still matched, so the shared parameters got gradient 0 forever (issue 11 §3).
_CACHES: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()


def cache_of(aggregator: Any) -> dict[Any, Any]:
    cache = _CACHES.get(aggregator)
    if cache is None:
        cache = _CACHES[aggregator] = {}
    return cache


class BlocksEngine(Engine):
    """An engine whose Jacobian is one block ``[T, *p.shape]`` per shared parameter, with the heads' ``∇ΣLᵢ``."""

    def __init__(self, shared: list[Tensor], heads: list[Tensor], cache: dict[Any, Any]) -> None:
        self.shared, self.heads, self.cache = shared, heads, cache

    def grads(self, items: list[Tensor], retain: bool) -> tuple[list[Tensor | None], list[Tensor | None]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def jacobian(self, losses: Losses, retain_graph: bool) -> Jacobian:
        blocks, head_grads = guarded(self.grads, losses.items, retain_graph)
        return Jacobian(blocks, list(self.shared), self.heads, head_grads)

    def write(self, jac: Jacobian, updates: list[Tensor], retain_graph: bool) -> None:
        for p, u in zip(jac.params or [], updates):
            accumulate(p, u)
        for p, g in zip(jac.heads, jac.head_grads):
            if g is not None:
                accumulate(p, g)


def accumulate(p: Tensor, g: Tensor) -> None:
    """``p.grad += g`` like ``Tensor.backward`` (a fresh tensor when ``.grad`` is ``None``)."""
    g = g.to(p.dtype)
    if p.grad is None:
        p.grad = g.clone() if g.data_ptr() == p.data_ptr() else g.contiguous()
    else:
        p.grad = p.grad + g
