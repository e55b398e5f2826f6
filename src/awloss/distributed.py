"""Distributed data parallel (DDP) support: the same learned weights on every rank.

Under DDP each rank sees its own slice of the batch, so its per-task losses differ. A weighting that
learns from the losses (uncertainty weighting, FAMO, …) or keeps statistics of them (DWA, …) would then
drift apart across ranks, and the model replicas would receive different weighted gradients. awloss
prevents that with one collective per call: when a process group with more than one rank is active,
:class:`~awloss.weighting.Weighting` replaces the loss *values* by their mean over the ranks, while each
loss keeps its local gradient path::

    synced = all_reduce_mean(losses.detach()) + (losses - losses.detach())

So every rank computes the same weights, the same gradients for the weighting's own parameters and the
same state updates (bit-identical: an all-reduce hands every rank the same bits), and DDP's averaging of
the model gradients gives ``mean_r Σ_i w_i ∇L_i^{(r)} = Σ_i w_i ∇ mean_r L_i^{(r)}``: the update a single
process would make on the concatenated batch (equal-sized shards, mean-reduced losses). The cost is one
all-reduce of ``T`` numbers per step.

Nothing to do in user code: a weighting syncs automatically (``weighting.sync = "auto"``, the default)
whenever ``torch.distributed`` is initialised with a world size above 1 and the call is a training call
(module in training mode, gradients enabled). Set ``weighting.sync = True`` to sync in every call (also
evaluation), ``False`` to never sync (a learnable or stateful weighting then warns once), and
``weighting.process_group`` to use a group other than the default one. The weighting may live inside or
outside the DDP-wrapped module.

Gradient-level methods need the *global* Jacobian: ``awloss.backward`` all-reduces the per-task gradients
of the shared parameters (and the heads' gradients) with :func:`all_reduce_mean_many` before aggregating,
and writes ``.grad`` without going through DDP's reducer, so a DDP-wrapped model works as is (no "marked
ready twice"), inside or outside ``no_sync()`` (every call is synchronised).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "is_distributed",
    "world_size",
    "all_reduce_mean",
    "all_reduce_mean_many",
    "sync_losses",
    "broadcast_module",
    "broadcast_state",
    "check_synchronized",
]


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def is_distributed(group: Any = None) -> bool:
    """``True`` when ``torch.distributed`` is initialised and ``group`` has more than one rank."""
    if torch.compiler.is_compiling():
        return False
    dist = _dist()
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1)


def world_size(group: Any = None) -> int:
    """The number of ranks in ``group`` (1 when not distributed)."""
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return int(dist.get_world_size(group))


def all_reduce_mean(tensor: Tensor, group: Any = None) -> Tensor:
    """Return the mean of ``tensor`` over the ranks of ``group`` (a new, detached tensor).

    Every rank receives the same bits. Without an initialised process group this returns a detached copy.

    Example:
        >>> import torch
        >>> from awloss.distributed import all_reduce_mean
        >>> all_reduce_mean(torch.tensor([1.0, 2.0]))  # single process: unchanged
        tensor([1., 2.])
    """
    out = tensor.detach().clone()
    if not is_distributed(group):
        return out
    dist = _dist()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)  # gloo has no AVG
    return out.div_(dist.get_world_size(group))


def all_reduce_mean_many(tensors: list[Tensor], group: Any = None) -> list[Tensor]:
    """:func:`all_reduce_mean` of several tensors with one collective (they are flattened into one buffer)."""
    if not is_distributed(group) or not tensors:
        return [t.detach().clone() for t in tensors]
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    flat = all_reduce_mean(torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors]), group)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].view(t.shape).to(t.dtype))
        start += t.numel()
    return out


def sync_losses(losses: Tensor, group: Any = None) -> Tensor:
    """``losses`` with the values averaged over the ranks and each rank's own gradient path kept.

    The value is exactly the all-reduced mean (``x - x`` is exactly 0 for finite ``x``) and
    ``∂ synced_i / ∂ losses_i = 1``.
    """
    mean = all_reduce_mean(losses, group)
    return mean + (losses - losses.detach())


def _should_sync(weighting: nn.Module) -> bool:
    """Decide for one call of ``weighting`` whether to all-reduce its losses; warn when it should but won't."""
    group = getattr(weighting, "process_group", None)
    if not is_distributed(group):
        return False
    sync = getattr(weighting, "sync", "auto")
    if sync is True:
        return True
    training_call = weighting.training and torch.is_grad_enabled()
    if sync == "auto":
        return training_call
    needs = getattr(weighting, "learnable", False) or getattr(weighting, "stateful", False)
    if sync is False and needs and training_call and not getattr(weighting, "_warned_unsynced", False):
        weighting._warned_unsynced = True
        warnings.warn(
            f"{type(weighting).__name__} is learnable or stateful and runs in a process group of "
            f"{world_size(group)} ranks with `sync=False`: each rank learns its own weights from its own "
            "losses, so the weights and the model replicas drift apart. Set `weighting.sync = 'auto'` "
            "(the default) to average the losses over the ranks.",
            UserWarning,
            stacklevel=4,
        )
    return False


def maybe_sync(weighting: nn.Module, losses: Tensor) -> Tensor:
    """Hook called by :class:`~awloss.weighting.Weighting` on every call (see the module docstring).

    On the first synced call it also copies the weighting's ``state_dict()`` from the group's first rank
    to the others (as DDP does for the modules it wraps), so that a random initialisation or a private
    random generator (RLW) starts out the same on every rank.
    """
    if not _should_sync(weighting):
        return losses
    group = getattr(weighting, "process_group", None)
    if not getattr(weighting, "_awloss_state_broadcast", False):
        broadcast_state(weighting, group=group)
        weighting._awloss_state_broadcast = True
    return sync_losses(losses, group)


def sync_update_losses(weighting: nn.Module, losses: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments of a weighting's ``update(*losses)``, averaged over the ranks when it syncs.

    ``update`` runs after ``optimizer.step()``, usually under ``torch.no_grad()``; it syncs whenever the
    weighting is in training mode (or ``sync=True``) and ``sync`` is not ``False``.
    """
    group = getattr(weighting, "process_group", None)
    sync = getattr(weighting, "sync", "auto")
    if sync is False or not is_distributed(group) or (sync == "auto" and not weighting.training):
        return losses
    vec = weighting._loss_vector(losses, sync=False)  # type: ignore[operator]
    return (all_reduce_mean(vec, group),)


def broadcast_module(module: nn.Module, src: int = 0, group: Any = None) -> None:
    """Copy ``module``'s parameters and buffers from rank ``src`` to every rank, in place.

    Use it once after building (or loading) a weighting that lives outside the DDP-wrapped model and
    whose initialisation is random; DDP does the same for the modules it wraps.
    """
    if not is_distributed(group):
        return
    dist = _dist()
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=src, group=group)


def broadcast_state(module: nn.Module, src: int = 0, group: Any = None) -> None:
    """Copy ``module.state_dict()`` from rank ``src`` of ``group`` to every rank and load it (a collective).

    Unlike :func:`broadcast_module` this goes through ``load_state_dict``, so state kept outside tensors
    but restored from the state dict (e.g. a private ``torch.Generator``) follows too.
    """
    if not is_distributed(group):
        return
    dist = _dist()
    src = dist.get_global_rank(group, src) if group is not None else src
    state = module.state_dict()
    with torch.no_grad():
        for key in state:
            t = state[key].detach().clone().contiguous()
            dist.broadcast(t, src=src, group=group)
            state[key] = t
    module.load_state_dict(state)


def check_synchronized(module: nn.Module, group: Any = None) -> bool:
    """``True`` when every parameter and buffer of ``module`` is bit-identical on all ranks (a collective).

    Meant for tests and debugging: it gathers every tensor from every rank.
    """
    if not is_distributed(group):
        return True
    dist = _dist()
    ok = True
    for t in [*module.parameters(), *module.buffers()]:
        gathered = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, t.detach().contiguous(), group=group)
        ok = ok and all(torch.equal(g, gathered[0]) for g in gathered)
    return ok
