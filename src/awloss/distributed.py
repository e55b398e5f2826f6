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
all-reduce of ``3 + 2T`` numbers per step (a header, the values, and which tasks each rank was given).

A task given as ``None`` on some ranks only (its labels missing from their shards) is averaged over the
``c_i`` ranks where it is present, and its local gradient path is scaled by ``W / c_i``, so that DDP's mean
over the ``W`` ranks of the model gradients is again the single process's ``w_i ∇ mean_{r present} L_i^{(r)}``
(one process given the present ranks' data); a task ``None`` on every rank is absent (left out, weight 0).
The presence travels in the same all-reduce (``T`` numbers): no extra collective. ``awloss.backward`` does
the same for its loss values and per-task gradients: the row of a task absent on some ranks is the mean
over the ranks where it is present (and so are its contributions to the heads' gradients).

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

Ranks that disagree raise on every rank, never on one (the other would wait in the all-reduce until the
process group's timeout) and never silently: a small float64 header travels with each all-reduce (whether
this rank's local checks failed, and a fingerprint of the call: weighting and method, task count, names,
parameter shapes) and every rank reads the same verdict. So

* a NaN (or any error of the local checks) on one rank raises on every rank, naming the rank and the task;
  a training loop that skips the bad batch (``except ValueError``) keeps the ranks in step;
* a weighting given a mapping in another key order on another rank is aligned by name (rank 0's order,
  agreed once, on the first synchronised call); other names or counts raise :class:`RankMismatchError`;
* ``update()`` is a collective like the call: a rank that calls it alone (``if rank == 0: famo.update(...)``)
  meets the other rank's next call and both raise :class:`RankMismatchError` (if the other rank's next
  collective is not awloss's — DDP's buffer broadcast, say — the ranks wait for the group's ``timeout``);
* in ``awloss.backward`` a task ``None`` on one rank only (its row averaged over the ranks where it is present,
  see above), or a shared parameter that one rank's losses do not reach (its block zero-filled there), keeps
  the same layout on every rank (:func:`reduce_jacobian`); the
  task-specific parameters are taken from each rank's graph unless ``task_params`` is given, so pass it
  when tasks can be absent on some ranks (else :class:`RankMismatchError` says so on every rank); a dict
  in another key order raises.

Cost per step, measured (2 gloo ranks, T = 3; ``tests`` count them): a weighting with ``num_tasks`` makes one
all-reduce of ``3 + 2T`` float64 numbers (header, values, presence; ``3 + T`` before the presence) and one
host read; without ``num_tasks`` two: a 4-number header, then ``T`` values (``2T`` with the presence, only
in a step where some rank has an absent task, and then one more host read). ``awloss.backward`` makes four:
a 5-number header, the ``T`` loss values (``2T`` when a task is absent on some rank, and one host read),
a 3-number header and ``T·n_shared + n_heads + flags`` gradients; one host read each of the headers and
of the used-parameter flags.
"""

from __future__ import annotations

import math
import sys
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # (a cycle at run time: weighting._base imports this module)
    from .weighting._base import Weighting

__all__ = [
    "is_distributed",
    "world_size",
    "all_reduce_mean",
    "all_reduce_mean_many",
    "sync_losses",
    "broadcast_module",
    "broadcast_state",
    "check_synchronized",
    "RankMismatchError",
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


def all_reduce_sum(tensor: Tensor, group: Any = None) -> Tensor:
    """The sum of ``tensor`` over the ranks of ``group`` (a new, detached tensor; a copy when not distributed)."""
    out = tensor.detach().clone().contiguous()
    if is_distributed(group):
        _dist().all_reduce(out, op=_dist().ReduceOp.SUM, group=group)
    return out


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


def _should_sync(weighting: Weighting) -> bool:
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


def maybe_sync(weighting: Weighting, local: Callable[[Any], Tensor], losses: Any) -> Tensor:
    """Hook called by :class:`~awloss.weighting.Weighting` on every call (see the module docstring).

    ``local(losses)`` builds and checks this rank's loss vector. When the call syncs, its errors do not
    escape on this rank alone: they travel with the all-reduce and every rank raises (see
    :func:`_synced_vector`). On the first synced call the ranks also agree on the task names (a mapping
    built in another key order on another rank is aligned by name) and the weighting's ``state_dict()`` is
    copied from the group's first rank to the others (as DDP does for the modules it wraps), so that a
    random initialisation or a private random generator (RLW) starts out the same on every rank.
    """
    if not _should_sync(weighting):
        return local(losses)
    return _synced_vector(weighting, "call", local, losses)


def sync_update_losses(weighting: Weighting, losses: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments of a weighting's ``update(*losses)``, averaged over the ranks when it syncs.

    ``update`` runs after ``optimizer.step()``, usually under ``torch.no_grad()``; it syncs whenever the
    weighting is in training mode (or ``sync=True``) and ``sync`` is not ``False``. It is a collective:
    every rank must call it (a rank that calls it alone is detected when another rank's next awloss
    collective meets it: both raise :class:`RankMismatchError`).
    """
    group = getattr(weighting, "process_group", None)
    sync = getattr(weighting, "sync", "auto")
    if sync is False or not is_distributed(group) or (sync == "auto" and not weighting.training):
        return losses

    def local(ls: Any) -> Tensor:
        return weighting._loss_vector(ls, sync=False)

    vec = _synced_vector(weighting, "update", local, losses).detach()
    absent = set(weighting.__dict__.get("_absent", ()))  # the tasks absent on every rank stay absent
    if not absent:
        return (vec,)
    return ([None if i in absent else v for i, v in enumerate(vec.unbind(0))],)


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


# --------------------------------------------------------------------------- ranks that disagree
# A collective that one rank enters and another does not (it raised before, or it calls something else)
# hangs until the process group's timeout, or mixes data of different calls. So nothing awloss checks
# before a collective raises on one rank alone: the verdict travels *with* the collective, in a small
# float64 header summed over the ranks, and every rank reads the same verdict and raises together:
#
#     header = [status, c, c², *extra]     status: 1 if this rank failed locally, else 0
#                                           c:      a fingerprint (1 ≤ c < 2²⁰) of the call's layout
#
# The ranks agree iff (Σc)² = W·Σc² (Cauchy–Schwarz holds with equality only for equal c); the sums are
# exact in float64 and compared as Python ints. Only on failure do the ranks exchange what each saw (an
# all_gather_object, every rank being on that path), to name the rank, the task and the error.


class RankMismatchError(RuntimeError):
    """The ranks of a process group called awloss with different layouts (tasks, names, parameters) or
    different collectives (e.g. ``update()`` on one rank only). Raised on every rank."""


_CODE_MOD = (1 << 20) - 3
_HEADER = 3
_KNOWN_ERRORS = {e.__name__: e for e in (ValueError, TypeError, RuntimeError, NotImplementedError)}
_RULE = (
    "Under torch.distributed a weighting's call and its update(), and awloss.backward, are collectives: "
    "call them on every rank, in the same order, with the same tasks (pass None for a task absent from a "
    "rank's batch) and the same shared parameters."
)


def _code(layout: Any) -> int:
    return zlib.crc32(repr(layout).encode()) % _CODE_MOD + 1


def _comm_device(group: Any, hint: torch.device | None) -> torch.device:
    """Where a collective's buffer lives: ``hint`` (the data's device) or the backend's device."""
    if hint is not None:
        return hint
    backend = str(_dist().get_backend(group)).lower()
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _header(failed: bool, code: int, extra: Sequence[float], device: torch.device) -> Tensor:
    c = float(code)
    return torch.tensor([1.0 if failed else 0.0, c, c * c, *extra], dtype=torch.float64, device=device)


def _all_sum(buf: Tensor, group: Any) -> Tensor:
    dist = _dist()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    return buf


def _verdict(head: list[float], world: int) -> tuple[bool, bool]:
    """(some rank failed, the ranks' layouts differ) from a summed header (read on the host)."""
    s1, s2 = int(head[1]), int(head[2])
    return head[0] > 0, s1 * s1 != world * s2


def _describe(layout: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in layout.items())


def _fail_together(what: str, layout: dict[str, Any], error: BaseException | None, group: Any) -> None:
    """Every rank is here (the summed header said so): exchange what each saw and raise on every rank."""
    dist = _dist()
    mine = (
        dist.get_rank(),
        None if error is None else (type(error).__name__, str(error)),
        _describe(layout),
    )
    seen: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(seen, mine, group=group)
    failed = [s for s in seen if s[1] is not None]
    if failed:
        rank, (kind, msg), _ = failed[0]
        text = (
            f"{what} failed on rank {rank}: {kind}: {msg} awloss raises this on every rank (the error "
            "travelled with the all-reduce), so the ranks stay in step: skipping this batch on every rank is safe."
        )
        if error is not None:
            if sys.version_info >= (3, 11):  # (no notes on 3.10: the error as it is)
                error.add_note(text)
            raise error
        raise _KNOWN_ERRORS.get(kind, RuntimeError)(text)
    lines = "; ".join(f"rank {r}: {d}" for r, _, d in seen)
    raise RankMismatchError(f"The ranks disagree on {what}: {lines}. {_RULE}")


def _agree_first_call(weighting: Weighting, kind: str, vec: Tensor | None, error: BaseException | None,
                      group: Any) -> Tensor | None:
    """First synced call of ``weighting``: agree on the layout; align a mapping's names to rank 0's order.

    A collective (one all_gather_object, once per weighting). Raises on every rank when a rank failed or
    when the ranks' tasks differ (other names, another count, names on some ranks only).
    """
    dist = _dist()
    names = getattr(weighting, "_task_names", None)
    mine = {"op": f"{type(weighting).__name__}.{kind}", "tasks": None if vec is None else int(vec.numel()),
            "names": None if names is None else list(names)}
    seen: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(seen, (mine, error is not None), group=group)
    what = f"the first synchronised {type(weighting).__name__}.{kind}()"
    if any(f for _, f in seen):
        _fail_together(what, mine, error, group)
    ref = seen[0][0]
    if all(s == ref for s, _ in seen):
        return vec
    same_tasks = all(s["op"] == ref["op"] and s["tasks"] == ref["tasks"] for s, _ in seen)
    named = [s["names"] for s, _ in seen]
    if same_tasks and all(n is not None and sorted(n) == sorted(ref["names"]) for n in named):
        assert vec is not None and names is not None
        weighting._task_names = tuple(ref["names"])  # align by name: rank 0's order on every rank
        if list(names) != ref["names"]:
            order = [list(names).index(n) for n in ref["names"]]
            vec = vec[torch.tensor(order, device=vec.device)]
            absent = set(weighting.__dict__.get("_absent", ()))  # this rank's indices, now in rank 0's order
            weighting.__dict__["_absent"] = tuple(j for j, i in enumerate(order) if i in absent)
        return vec
    lines = "; ".join(f"rank {r}: {_describe(s)}" for r, (s, _) in enumerate(seen))
    raise RankMismatchError(f"The ranks disagree on {what}: {lines}. {_RULE}")


def _synced_vector(weighting: Weighting, kind: str, local: Callable[[Any], Tensor], losses: Any) -> Tensor:
    """``local(losses)`` averaged over the ranks (value) with this rank's gradient path, all ranks or none.

    One all-reduce of ``[header, losses, present]`` (two when the weighting has no fixed ``num_tasks``: the
    header first, so that ranks with different counts never meet in one collective). A local error (a NaN
    found by the value check, a wrong count, a missing name) is sent as ``status = 1`` and re-raised after the
    collective, on every rank. ``present`` (1 per task given, 0 for ``None``) sums to ``c_i``, the number of
    ranks where task ``i`` is present: its value is the mean over those ranks, its gradient path is scaled by
    ``W / c_i`` (so DDP's mean over the ``W`` ranks gives the mean over the ``c_i``), and a task with
    ``c_i = 0`` stays absent (:attr:`Weighting._absent`). Cost: ``3 + 2T`` float64 numbers and one host read
    of the header and the counts (without ``num_tasks``: ``4`` and ``T`` numbers, ``2T`` and a read of the
    counts only when some rank has an absent task).
    """
    group = getattr(weighting, "process_group", None)
    try:
        vec, error = local(losses), None
    except Exception as e:  # raised after the collective, on every rank
        vec, error = None, e
    if not weighting.__dict__.get("_awloss_state_broadcast", False):
        vec = _agree_first_call(weighting, kind, vec, error, group)
        broadcast_state(weighting, group=group)
        weighting._awloss_state_broadcast = True
    world = world_size(group)
    fixed = weighting.num_tasks
    T = int(vec.numel()) if vec is not None else fixed
    names = getattr(weighting, "_task_names", None)
    layout = {"op": f"{type(weighting).__name__}.{kind}", "tasks": T, "names": None if names is None else list(names)}
    dev = _comm_device(group, vec.device if vec is not None else getattr(weighting, "_device", lambda: None)())
    absent = weighting.__dict__.get("_absent", ()) if vec is not None else ()
    what = f"{type(weighting).__name__}.{kind}()"
    if fixed is None:  # counts may differ: agree on the header (and whether a task is absent) before the values
        summed = _all_sum(_header(error is not None, _code(layout), (float(len(absent)),), dev), group).tolist()
        failed, differ = _verdict(summed, world)
        if failed or differ:
            _fail_together(what, layout, error, group)
        assert vec is not None and T is not None
        body = vec.detach().to(torch.float64)
        if summed[_HEADER] == 0:  # no task absent on any rank: the values alone
            return _with_local_path(_all_sum(body.clone(), group).div_(world), vec, None, world)
        buf = _all_sum(torch.cat([body, _presence(T, absent, dev)]), group)
        counts = buf[T:].tolist()
        sums = buf[:T]
    else:
        head = _header(error is not None, _code(layout), (), dev)
        body = vec.detach().to(torch.float64) if vec is not None and T == fixed else head.new_zeros(fixed)
        buf = _all_sum(torch.cat([head, body.reshape(-1), _presence(fixed, absent, dev)]), group)
        read = torch.cat([buf[:_HEADER], buf[_HEADER + fixed :]]).tolist()  # one host read: verdict and counts
        failed, differ = _verdict(read[:_HEADER], world)
        if failed or differ or vec is None:
            _fail_together(what, layout, error, group)
        counts, sums = read[_HEADER:], buf[_HEADER : _HEADER + fixed]
    assert vec is not None
    # Tasks absent on every rank stay absent (the weighting leaves them out); the others are present.
    weighting.__dict__["_absent"] = tuple(i for i, c in enumerate(counts) if c == 0)
    if all(c == world for c in counts):
        return _with_local_path(sums.div_(world), vec, None, world)
    n = torch.tensor([max(c, 1.0) for c in counts], dtype=torch.float64, device=sums.device)
    return _with_local_path(sums / n, vec, n, world)


def _presence(T: int, absent: Sequence[int], device: torch.device) -> Tensor:
    """``Tensor[T]`` of float64: 1 for a task this rank was given, 0 for one given as ``None``."""
    p = torch.ones(T, dtype=torch.float64, device=device)
    if absent:
        p[list(absent)] = 0.0
    return p


def _with_local_path(mean: Tensor, local: Tensor, counts: Tensor | None, world: int) -> Tensor:
    """The ranks' ``mean`` as value, this rank's ``local`` gradient path, scaled by ``world / counts`` when a
    task is present on only ``counts`` of the ranks (DDP then averages it over ``world``)."""
    mean = mean.to(local.dtype)
    path = local - local.detach()
    if counts is not None:
        path = path * (world / counts).to(local.dtype)
    return mean + path


# --------------------------------------------------------------------------- awloss.backward's reduction
def sync_task_losses(
    items: list[Tensor],
    names: Sequence[str] | None,
    error: BaseException | None = None,
    group: Any = None,
    present: Sequence[bool] | None = None,
) -> tuple[list[Tensor], list[bool]]:
    """``awloss.backward``'s losses with their values averaged over the ranks where each task is present, and
    which tasks are present on some rank.

    Two collectives: a header (this rank's local ``error``, e.g. a NaN found by the value check, the task
    count and names, whether any loss requires grad, how many tasks are absent here) and then the values.
    Raises on every rank when a rank failed, the ranks' tasks differ, or on some rank no loss requires grad.
    When a task is absent (``present[i]`` false: ``None`` or a constant) on some ranks, the values travel with
    the presence counts ``c_i`` (``2T`` numbers instead of ``T``): the value is the mean over the ``c_i``
    ranks and the gradient path is scaled by ``W / c_i``, so that the per-task gradients averaged over the
    ``W`` ranks (:func:`reduce_jacobian`) are the mean over the ranks where the task is present.
    """
    T = len(items)
    present = [True] * T if present is None else list(present)
    layout = {"op": "awloss.backward", "tasks": T, "names": None if names is None else list(names)}
    has_grad = any(x.requires_grad for x in items)
    dev = _comm_device(group, items[0].device if items else None)
    world = world_size(group)
    extra = (1.0 if has_grad else 0.0, float(T - sum(present)))
    head = _all_sum(_header(error is not None, _code(layout), extra, dev), group).tolist()
    failed, differ = _verdict(head, world)
    if failed or differ:
        _fail_together("awloss.backward()", layout, error, group)
    if int(head[3]) < world:
        raise ValueError(
            f"Argument `losses` does not require grad on {world - int(head[3])} of {world} ranks (every task absent "
            "or constant there): awloss.backward needs a loss that depends on a parameter on every rank; skip "
            "the batch on every rank, or give that rank's absent tasks as None next to one real loss."
        )
    values = torch.stack([x.detach() for x in items])
    if head[4] == 0:  # every task present on every rank
        values = all_reduce_mean(values, group)
        return [_with_local_path(v, x, None, world) for v, x in zip(values.unbind(0), items)], present
    flags = torch.tensor(present, dtype=values.dtype, device=values.device)
    buf = _all_sum(torch.cat([values, flags]), group)
    counts = buf[T:].clamp_min(1.0)
    everywhere = (buf[T:] > 0).tolist()  # a host read, only in a step with an absent task
    means = (buf[:T] / counts).unbind(0)
    return [_with_local_path(v, x, c, world) for v, x, c in zip(means, items, counts.unbind(0))], everywhere


def reduce_jacobian(
    blocks: list[Tensor | None],
    head_grads: list[Tensor | None],
    shared: list[Tensor],
    heads: list[Tensor],
    T: int,
    group: Any = None,
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """The per-task gradients of the global batch: ``blocks[k]`` (``[T, *shared[k].shape]``) and the heads'
    ``∇ΣLᵢ`` averaged over the ranks, in one layout on every rank.

    A block or head gradient that is ``None`` on this rank (a parameter this rank's losses do not reach: a
    task absent here, a branch not taken) is zero-filled, so every rank sends the same buffer; it comes back
    ``None`` only if no rank used it. A header collective first checks that the ranks pass the same shared
    and task-specific parameters (shapes); a mismatch raises :class:`RankMismatchError` on every rank.
    Cost: one all-reduce of ``T·n_shared + n_heads`` numbers (plus a 3-number header), one host read of the
    ``len(shared) + len(heads)`` used flags.
    """
    layout = {
        "op": "awloss.backward",
        "tasks": T,
        "shared parameters (shapes)": [tuple(p.shape) for p in shared],
        "task-specific parameters (shapes)": [tuple(p.shape) for p in heads],
    }
    ref = next((b for b in [*blocks, *head_grads] if b is not None), None)
    dev = _comm_device(group, ref.device if ref is not None else (shared[0].device if shared else None))
    world = world_size(group)
    failed, differ = _verdict(_all_sum(_header(False, _code(layout), (), dev), group).tolist(), world)
    if failed or differ:
        try:
            _fail_together("awloss.backward()", layout, None, group)
        except RankMismatchError as e:
            if sys.version_info >= (3, 11):  # (no notes on 3.10: the error as it is)
                e.add_note(
                    "If the task-specific parameters differ: awloss finds them in each rank's graph, so a task absent "
                    "(None) on some ranks, or a branch taken on some ranks only, changes them; pass `task_params=` "
                    "(the same list on every rank, e.g. `model.heads.parameters()`) and awloss zero-fills the rest."
                )
            raise
    dtype = ref.dtype if ref is not None else (shared[0].dtype if shared else torch.get_default_dtype())
    for b in [*blocks, *head_grads]:
        if b is not None:
            dtype = torch.promote_types(dtype, b.dtype)
    shapes = [(T, *p.shape) for p in shared] + [tuple(p.shape) for p in heads]
    local = [*blocks, *head_grads]
    flags = torch.tensor([0.0 if b is None else 1.0 for b in local], dtype=dtype, device=dev)
    flat = torch.cat([flags, *(b.detach().reshape(-1).to(dtype) if b is not None
                               else torch.zeros(math.prod(s), dtype=dtype, device=dev) for b, s in zip(local, shapes))])
    flat = _all_sum(flat, group)
    used = [u > 0 for u in flat[: len(local)].tolist()]
    out: list[Tensor | None] = []
    start = len(local)
    for b, s, u, p in zip(local, shapes, used, [*shared, *heads]):
        n = math.prod(s)
        out.append(flat[start : start + n].view(s).div_(world).to(p.dtype if b is None else b.dtype) if u else None)
        start += n
    return out[: len(blocks)], out[len(blocks) :]


# --------------------------------------------------------------------------- FSDP2 (fully_shard)
_FSDP1 = (
    "awloss.backward does not support FSDP1 (`FullyShardedDataParallel`, Lightning's strategy='fsdp'): its flat "
    "parameters hide the per-task gradients of the shared parameters. Use FSDP2 (`torch.distributed.fsdp."
    "fully_shard`; in Lightning `strategy=ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1)` "
    "with a `configure_model` that calls fully_shard, CPU included) with a Gramian aggregator (e.g. "
    "awloss.get('upgrad')), DDP (strategy='ddp'), or a loss-level weighting (it syncs its losses under any strategy)."
)


def is_sharded(params: Sequence[Tensor]) -> bool:
    """``True`` when some of ``params`` are sharded ``DTensor`` parameters (``torch.distributed.fsdp.fully_shard``).

    Raises ``NotImplementedError`` for parameters flattened by FSDP1 (``FullyShardedDataParallel``), which
    ``awloss.backward`` cannot differentiate per task.
    """
    if not params or not _dist().is_available():
        return False
    if any(getattr(p, "_fsdp_flattened", False) for p in params):
        raise NotImplementedError(_FSDP1)
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        return False
    return any(isinstance(p, DTensor) for p in params)


def reject_sharded(params: Sequence[Tensor], what: str) -> None:
    """Raise ``NotImplementedError`` if ``params`` are sharded by FSDP2: ``torch.autograd.grad`` of a sharded
    parameter is ``None`` (the forward uses the all-gathered copy), so a method measuring their gradients
    would silently see zeros."""
    if is_sharded(params):
        raise NotImplementedError(
            f"{what} is sharded by FSDP2 (fully_shard): its per-task gradients cannot be taken from the shards. "
            "Use DDP for this method, or another loss-level weighting (they run under FSDP2 unchanged)."
        )
