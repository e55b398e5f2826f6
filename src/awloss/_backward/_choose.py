"""Which engine computes the Jacobian: a function of the arguments, the aggregator's declared capabilities
(``_uniform``, ``state_per_column``, ``gramian_weights``), the device, whether the shared parameters are
sharded (FSDP2) and what the autograd graph contains."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..aggregation._base import Aggregator, GramianAggregator
from ..distributed import is_distributed, is_sharded
from . import _engine
from ._batched import BatchedEngine
from ._engine import Engine, cache_of
from ._fsdp import FsdpEngine, check_fsdp
from ._gather import Losses, as_params
from ._graph import walk
from ._gram import GramianEngine
from ._gram_plan import PLAN_MIN, plan
from ._loop import GradLoopEngine, LoopEngine
from ._representation import RepresentationEngine
from ._summed import SummedEngine


def choose_engine(
    losses: Losses,
    shared: list[Tensor],
    aggregator: Aggregator,
    representation: Tensor | None,
    task_params: Any,
    method: str,
    budget: int | None = None,
) -> Engine:
    items, cache = losses.items, cache_of(aggregator)
    if is_sharded(shared):  # FSDP2 (FSDP1's flat parameters raise here): the shards' Jacobian, G reduced
        return FsdpEngine(shared, check_fsdp(shared, aggregator, representation, losses.scale))
    distributed = is_distributed()
    exclude = {id(p) for p in shared}
    if representation is not None:
        if method == "gramian":
            raise ValueError(
                "Argument `method='gramian'` computes the Gramian of the shared parameters and cannot be combined "
                "with `representation=` (per-task gradients of the feature): pass one or the other."
            )
        _check_representation(representation, aggregator, distributed)
        exclude.add(id(representation))
    heads = None if task_params is None else [p for p in as_params(task_params, "task_params") if id(p) not in exclude]
    batched = method == "batched" or (method == "auto" and _engine.auto_batches(items[0].device))
    if representation is not None:
        above = walk(items, representation.grad_fn, exclude)  # the heads, bypass paths, what blocks batching
        if heads is not None:
            above.leaves = heads
        batched = batched and _engine.batches(method, above.hard, above.soft)
        return RepresentationEngine(shared, representation, above, batched, cache)
    plain = heads is None and not distributed  # full backward passes would fire DDP's reducer hooks
    if plain and getattr(aggregator, "_uniform", False) and losses.scale is None:
        return SummedEngine(shared, cache)  # update = c·∇ΣLᵢ whatever `method`: one backward pass
    if method == "gramian":
        if distributed:
            raise NotImplementedError(
                "awloss.backward(method='gramian') is not supported under torch.distributed (DDP) yet: the "
                "Gramian of the global batch needs the cross-rank products. Use method='loop' or 'auto'."
            )
        return GramianEngine(shared, heads, _engine.auto_batches(items[0].device), cache=cache)
    if method == "auto" and _worth_planning(items, shared, aggregator, distributed, budget):
        made = plan(items, shared, heads)  # over the memory budget, or the per-sample identity pays (_gram_plan)
        if not made.reentrant and (_over_budget(items, shared, aggregator, distributed, budget) or made.pays()):
            return GramianEngine(shared, heads, _engine.auto_batches(items[0].device), made, cache)
    if plain and not batched:
        return LoopEngine(shared, cache)
    if heads is None or batched:
        graph = walk(items, None, exclude)
        heads = graph.leaves if heads is None else heads
        if batched and _engine.batches(method, graph.hard, graph.soft):
            return BatchedEngine(shared, heads, cache)
    return LoopEngine(shared, cache) if plain else GradLoopEngine(shared, heads, cache)


def _over_budget(items: list[Tensor], shared: list[Tensor], aggregator: Aggregator, distributed: bool,
                 budget: int | None) -> bool:
    """``method="auto"``: the Jacobian ``T·n·itemsize`` would exceed ``budget`` bytes and only ``G`` is needed."""
    if budget is None or distributed or not isinstance(aggregator, GramianAggregator):
        return False
    return len(items) * sum(p.numel() * p.element_size() for p in shared) > budget


def _worth_planning(items: list[Tensor], shared: list[Tensor], aggregator: Aggregator, distributed: bool,
                    budget: int | None) -> bool:
    """``method="auto"``: whether to look at the graph for the gramian engine (an aggregator that needs only
    ``G``, no DDP, and a Jacobian over the memory budget or of at least ``PLAN_MIN`` entries)."""
    if distributed or not isinstance(aggregator, GramianAggregator):
        return False
    return _over_budget(items, shared, aggregator, distributed, budget) or len(items) * sum(
        p.numel() for p in shared) >= PLAN_MIN


def _check_representation(representation: Any, aggregator: Aggregator, distributed: bool) -> None:
    if not isinstance(representation, Tensor) or not representation.requires_grad:
        raise ValueError("Argument `representation` must be a tensor that requires grad (a shared feature).")
    if aggregator.state_per_column:
        raise ValueError(
            f"{type(aggregator).__name__} keeps state per column of the Jacobian (one entry per parameter); "
            "with `representation=` the columns are samples × features, which change meaning every batch. "
            "Pass the shared parameters without `representation=`."
        )
    if distributed:
        raise NotImplementedError(
            "awloss.backward(representation=...) is not supported under torch.distributed yet: pass the shared "
            "parameters instead (their per-task gradients are averaged over the ranks)."
        )
