"""Step 1 of :func:`awloss.backward`: the losses as one scalar per task, and the parameters as lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .. import _checks
from .._inputs import _split, as_loss_vector
from ..aggregation._base import Aggregator, GramianAggregator
from ..distributed import is_distributed
from ._reduce import reduce_loss_values

METHODS = ("auto", "batched", "loop", "gramian")


@dataclass
class Losses:
    """What the engines differentiate: ``items[t]`` is task ``t``'s scalar loss (a zero that depends on the
    graph for an absent task, so its Jacobian row is 0), transformed by the aggregator and scaled by the
    GradScaler; ``scale`` is that scale (``None`` without one); ``names`` the task names of a mapping;
    ``present[t]`` is ``False`` for an absent (``None``) or constant task, whose Jacobian row is 0 (under
    ``torch.distributed``: absent on every rank; a task absent on some ranks only has its value and gradient
    path averaged over the ranks where it is present, see :func:`awloss.distributed.sync_task_losses`)."""

    items: list[Tensor]
    scale: float | None
    names: list[str] | None
    present: list[bool]


def check_arguments(aggregator: Any, method: str) -> None:
    if not isinstance(aggregator, Aggregator):
        raise TypeError(f"Argument `aggregator` must be an awloss Aggregator, got {type(aggregator).__name__}.")
    if method not in METHODS:
        raise ValueError(f"Argument `method` must be 'auto', 'batched', 'loop' or 'gramian', got {method!r}.")
    if method == "gramian" and not isinstance(aggregator, GramianAggregator):
        raise ValueError(
            f"Argument `method='gramian'` needs an aggregator whose weights depend on the Gramian G = JJᵀ only "
            f"(a GramianAggregator: UPGrad, MGDA, PCGrad, ...); {type(aggregator).__name__} needs the Jacobian "
            "itself: use method='loop', 'batched' or 'auto'."
        )


def gather_losses(losses: Any, aggregator: Aggregator, scaler: Any) -> Losses:
    """Validate ``losses``; absent tasks become zero rows; the aggregator's loss transform and the scaler apply.

    Under ``torch.distributed`` the loss *values* are those of the global batch (the gradient paths stay
    local), so a transform such as DB-MTL's log sees the same value on every rank.
    """
    items, names = _split((losses,))
    L, _ = as_loss_vector((losses,), num_tasks=None, task_names=None)  # validation only
    distributed = is_distributed()
    if not L.requires_grad and not distributed:  # under DDP: checked on every rank together (sync_task_losses)
        raise ValueError("Argument `losses` does not require grad: none of the losses depends on a parameter.")
    error = None
    mode = _checks.check_mode(aggregator)
    if distributed:  # an error (this step's or a deferred one) travels with the header collective
        try:
            _checks.poll(aggregator)
            if mode is not None:  # under DDP the header is read on the host anyway: check now
                _report_losses(aggregator, L.detach(), names)
        except Exception as e:  # raised on every rank by reduce_loss_values
            error = e
    elif mode is not None:  # the losses' check: a device flag read at the next step (checks.step polls)
        Ld = L.detach()
        _checks.push(aggregator, Ld.sum(), lambda m: _report_losses(m, Ld, names), mode)
    items = [
        (x if x.dim() == 0 else x.reshape(())) if isinstance(x, Tensor) and x.requires_grad else None for x in items
    ]
    present = [x is not None for x in items]
    if not all(present):  # constants and absent tasks have zero gradients
        zero = L.new_zeros(()) * L.sum()
        items = [zero if x is None else x for x in items]
    items = [x if x.dtype == L.dtype else x.to(L.dtype) for x in items]
    items, present = reduce_loss_values(items, names, error, present)  # under DDP: an error raises on every rank
    items = aggregator.transform_items(items)  # a declared capability: identity unless overridden (DB-MTL: log)
    scale = None
    if scaler is not None and scaler.is_enabled():
        items = [scaler.scale(x) for x in items]
        scale = float(scaler.get_scale())
    return Losses(items, scale, names, present)


def _report_losses(_: Any, L: Tensor, names: Any) -> None:
    finite = torch.isfinite(L)
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0, 0])
        label = f"`{names[i]}`" if names else f"`losses[{i}]`"
        raise ValueError(f"Loss {label} must be finite, got {L[i].item()}.")


def as_params(params: Any, what: str) -> list[Tensor]:
    """The distinct tensors requiring grad in ``params`` (an iterable, a module or a tensor), in order."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    if isinstance(params, Tensor):
        params = [params]
    out, seen = [], set()
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"Argument `{what}` must contain tensors, got {type(p).__name__}.")
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            out.append(p)
    return out


def shared_params_of(shared_params: Any) -> list[Tensor]:
    shared = as_params(shared_params, "shared_params")
    if not shared:  # an exhausted generator (made once outside the training loop) lands here too
        raise ValueError("Argument `shared_params` is empty (or nothing in it requires grad).")
    return shared
