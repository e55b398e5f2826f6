"""``awloss.backward``: per-task gradients of the shared parameters, aggregated into ``.grad``."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from . import _checks
from ._inputs import _split, as_loss_vector
from .aggregation._base import Aggregator, GramianAggregator
from .distributed import fsdp_backward, is_distributed, is_sharded, reduce_jacobian, sync_task_losses

__all__ = ["backward"]

# Per-aggregator Jacobian buffers, kept OUTSIDE the aggregator: in its ``__dict__`` they were pickled,
# deep-copied and torch.save'd with it, and the copy's buffer no longer aliased its per-parameter views
# while the cache key still matched, so the shared parameters got gradient 0 forever (issue 11 §3).
_CACHES: weakref.WeakKeyDictionary[Aggregator, dict] = weakref.WeakKeyDictionary()


def _cache_of(aggregator: Aggregator) -> dict:
    cache = _CACHES.get(aggregator)
    if cache is None:
        cache = _CACHES[aggregator] = {}
    return cache


_ENGINE = getattr(torch.autograd.Variable, "_execution_engine", None)  # what torch.autograd.backward calls


def _as_params(params: Any, what: str) -> list[Tensor]:
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


def _leaves(roots: list[Tensor], stop: Any, exclude: set[int], met: set[int] | None = None) -> list[Tensor]:
    """Leaf tensors requiring grad reachable from ``roots`` without passing through the node ``stop``.

    Leaves whose id is in ``exclude`` are not returned; their ids go into ``met`` when it is given (which
    shared parameters a path reaches). Every id returned is added to ``exclude``.
    """
    out: list[Tensor] = []
    seen: set[Any] = set()
    stack = [r.grad_fn for r in roots]
    while stack:
        fn = stack.pop()
        if fn is None or fn is stop or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None:
            if id(var) not in exclude:
                exclude.add(id(var))
                out.append(var)
            elif met is not None:
                met.add(id(var))
            continue
        stack.extend(f for f, _ in fn.next_functions)
    return out


_SPARSE = "a sparse gradient (nn.Embedding / nn.EmbeddingBag with sparse=True): the batched backward cannot view it"
_REENTRANT = (
    "reentrant checkpointing (torch.utils.checkpoint with use_reentrant=True): its backward calls "
    "torch.autograd.backward itself, which cannot run batched"
)


def _unbatchable(roots: list[Tensor], stop: Any = None) -> tuple[str | None, str | None]:
    """Why the graph of ``roots`` (above the node ``stop``) cannot take the batched (``is_grads_batched``) backward.

    Returns ``(hard, soft)``: ``hard`` is a reason it certainly fails (sparse gradients, reentrant
    checkpointing); ``soft`` names a custom ``autograd.Function`` that does not declare itself vmap-able
    (``generate_vmap_rule = True`` or a ``vmap`` staticmethod), whose backward may or may not batch.
    """
    soft = None
    seen: set[Any] = set()
    stack = [r.grad_fn for r in roots]
    while stack:
        fn = stack.pop()
        if fn is None or fn is stop or fn in seen:
            continue
        seen.add(fn)
        if getattr(fn, "_saved_sparse", False) is True:
            return _SPARSE, soft
        if isinstance(fn, torch.autograd.function.BackwardCFunction):
            if type(fn).__name__ == "CheckpointFunctionBackward":
                return _REENTRANT, soft
            cls = getattr(fn, "_forward_cls", None)
            declared = cls is not None and (
                getattr(cls, "generate_vmap_rule", False) or cls.vmap is not torch.autograd.Function.vmap
            )
            if soft is None and not declared:
                soft = (
                    f"the custom autograd.Function {getattr(cls, '__qualname__', type(fn).__name__)}, whose "
                    "backward is not declared vmap-able (generate_vmap_rule = True or a vmap staticmethod)"
                )
        stack.extend(f for f, _ in fn.next_functions)
    return None, soft


_SAID: set[str] = set()


def _resolve_method(method: str, items: list[Tensor], representation: Tensor | None) -> str:
    """``"auto"`` → ``"loop"`` on the CPU, ``"batched"`` elsewhere unless the graph cannot batch (then the loop,
    said once per reason); an explicit ``"batched"`` on such a graph raises, saying why and what to use."""
    if method == "loop" or (method == "auto" and not _auto_batches(items[0].device)):
        return "loop"
    stop = None if representation is None else representation.grad_fn  # batched only down to `representation`
    hard, soft = _unbatchable(items, stop)
    if method == "batched":
        if hard is not None:
            raise ValueError(
                f"Argument `method='batched'` cannot work on this model: it has {hard}. Use method='loop' "
                "(or 'auto', which falls back to the loop by itself)."
            )
        return "batched"
    reason = hard or soft
    if reason is None:
        return "batched"
    if reason not in _SAID:
        _SAID.add(reason)
        warnings.warn(
            f"awloss.backward(method='auto') uses the per-task loop instead of the batched backward: the model "
            f"has {reason}. Pass method='loop' to silence this" + ("" if hard else ", or method='batched' to try anyway")
            + ".",
            UserWarning,
            stacklevel=3,
        )
    return "loop"


def _auto_batches(device: torch.device) -> bool:
    """Whether ``method="auto"`` prefers the batched backward on ``device`` (not on the CPU: see the benchmark)."""
    return device.type != "cpu"


def _per_task_grads(
    items: list[Tensor], inputs: list[Tensor], extra: list[Tensor], retain: bool, method: str, cache: dict
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """Per-task gradients of ``inputs`` stacked as ``[T, *shape]``, and ``∇ΣLᵢ`` of ``extra`` (the heads).

    ``items`` are the scalar losses as given (never stacked: backpropagating through a stack would run
    every head for every task). ``"loop"`` makes one ``autograd.grad`` per task and copies into buffers
    kept in ``cache`` between calls (no fresh pages per step); ``"batched"`` makes one vectorised call
    with ``is_grads_batched`` and a second small one for ``extra``.
    """
    T = len(items)
    if method == "batched":
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
            heads = list(torch.autograd.grad(sum(items), extra, retain_graph=retain, allow_unused=True))
        return list(out), heads
    n_in = len(inputs)
    seen = [False] * n_in
    heads = [None] * len(extra)
    key = tuple((tuple(p.shape), p.dtype, p.device) for p in inputs) + (T,)
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
                heads[k] = g if heads[k] is None else heads[k] + g
    return [b if s else None for b, s in zip(bufs, seen)], heads


def _loop_backward(items: list[Tensor], shared: list[Tensor], retain: bool, cache: dict) -> tuple[Tensor, list[bool]]:
    """One full ``backward`` per task; shared gradients land in one flat buffer, every other leaf accumulates ``∇ΣLᵢ``.

    Before task ``t``'s backward, each shared parameter's ``.grad`` is set to its slice of row ``t`` of one
    flat ``[T, n]`` buffer kept between calls (zeroed row by row), so autograd's ``AccumulateGrad`` adds the
    gradient in place, straight into the Jacobian: no copy and no Python call per parameter and task.
    Which parameters receive a gradient is recorded by a post-accumulate hook removed as soon as it fired
    once. (Parameters whose dtype differs from the buffer's take a copying hook instead.) The task heads
    accumulate as in ``Tensor.backward``. Returns the buffer and which parameters received a gradient.
    """
    T = len(items)
    key = tuple((tuple(p.shape), p.dtype, p.device) for p in shared) + (T,)
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

    def make_mark(k: int):  # type: ignore[no-untyped-def]
        def mark(p: Tensor) -> None:
            used[k] = True

        return mark

    def make_copy(k: int):  # type: ignore[no-untyped-def]
        def copy(p: Tensor) -> None:
            views[k][current[0]].copy_(p.grad)
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


def _gramian(J: Tensor) -> Tensor:
    """``J Jᵀ``. On the CPU for 8 <= T <= 16, the lower triangle by blocks of 4 rows, mirrored: a BLAS
    ``[T, n] x [n, T]`` product with small ``T`` runs its micro-kernel half empty; blocks of 4 rows do less
    than ~2/3 of the work at a better rate (0.37 ms instead of 0.53 ms for T = 10, n = 82k, one thread)."""
    T = J.shape[0]
    if J.device.type != "cpu" or not 8 <= T <= 16:
        return J @ J.T
    G = J.new_empty(T, T)
    for i in range(0, T, 4):
        torch.mm(J[i : i + 4], J[: i + 4].T, out=G[i : i + 4, : i + 4])
    return G.tril() + G.tril(-1).T


def _aggregate(aggregator: Aggregator, blocks: list[Tensor], T: int) -> list[Tensor]:
    """Aggregate the per-input blocks ``[T, *shape]``; return the update of each block."""
    flat = [b.reshape(T, -1) for b in blocks]
    if isinstance(aggregator, GramianAggregator):
        G = _gramian(flat[0])
        for f in flat[1:]:
            G = G + _gramian(f)
        w = aggregator.gramian_weights(G)
        return [torch.tensordot(w.to(b.dtype), b, dims=1) for b in blocks]
    J = flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)
    update = aggregator(J)
    sizes = [f.shape[1] for f in flat]
    return [u.view(b.shape[1:]) for u, b in zip(update.split(sizes), blocks)]


def _aggregate_scaled(
    aggregator: Aggregator, blocks: list[Tensor], T: int, scale: float | None
) -> tuple[list[Tensor], bool]:
    """:func:`_aggregate` of GradScaler-scaled blocks: unscale, aggregate, re-scale; non-finite blocks pass through."""
    if scale is None:
        return _aggregate(aggregator, blocks, T), False
    if not bool(torch.stack([torch.isfinite(b).all() for b in blocks]).all()):
        return [b.sum(0) for b in blocks], True  # inf/NaN reach .grad: scaler.step skips this step
    return [u * scale for u in _aggregate(aggregator, [b / scale for b in blocks], T)], False


_COMPILED_HINT = (
    "The model's backward cannot be {what} (a model compiled with torch.compile's inductor backend, say): "
    "pass `representation=` (the output of the compiled shared trunk; the per-task gradients are then taken "
    "in eager mode through the heads), or compile with `torch._functorch.config.donated_buffer = False` "
    "and pass `method='loop'`."
)


def _task_grads(*args: Any, fn: Any = None) -> Any:
    """:func:`_per_task_grads` (or ``fn``) with a clear error for backwards that cannot be batched or replayed."""
    try:
        return (fn or _per_task_grads)(*args)
    except (RuntimeError, NotImplementedError) as e:
        msg = str(e)
        if "BatchedTensorImpl" in msg or "vmap" in msg or "Batching rule" in msg:
            first = msg.strip().splitlines()[0][:200] if msg.strip() else type(e).__name__
            raise RuntimeError(
                f"The model's backward cannot be batched with vmap ({first}): pass method='loop'. "
                + _COMPILED_HINT.format(what="batched with vmap")
            ) from e
        if "donated buffers" in msg:
            raise RuntimeError(_COMPILED_HINT.format(what="run twice (its buffers are donated)")) from e
        raise


def _representation_write(
    items: list[Tensor], z: Tensor, update_z: Tensor, shared: list[Tensor], heads: list[Tensor], retain: bool
) -> None:
    """One backward of ``ΣLᵢ`` in which ``z``'s gradient is replaced by the aggregated ``update_z``.

    The trunk below ``z`` receives ``(∂z/∂θ)ᵀ update_z``; every path from a shared parameter to the losses
    that bypasses ``z`` (a U-Net skip, a head that also reads an earlier layer) adds its ``∇ΣLᵢ``, like the
    heads, which receive ``∇ΣLᵢ`` too. Raises if no shared parameter is reached by either route.
    """
    ids = {id(p) for p in shared}
    met: set[int] = set()
    _leaves([z], None, set(ids), met)  # below z
    _leaves(items, z.grad_fn, set(ids), met)  # bypassing z
    if z.grad_fn is None and id(z) in ids:
        met.add(id(z))
    if not met:
        raise ValueError("No parameter in `shared_params` is used by the losses (through `representation` or not).")
    inputs = [p for p in shared if id(p) in met] + heads
    if z.grad_fn is None and id(z) not in ids:  # a leaf representation accumulates its own update
        inputs.append(z)
    handle = z.register_hook(lambda g: update_z.to(g.dtype))
    try:
        torch.autograd.backward(torch.stack(items).sum(), inputs=inputs, retain_graph=retain)
    finally:
        handle.remove()


def _accumulate(p: Tensor, g: Tensor) -> None:
    g = g.to(p.dtype)
    if p.grad is None:
        p.grad = g.clone() if g.data_ptr() == p.data_ptr() else g.contiguous()
    else:
        p.grad = p.grad + g


def backward(
    losses: Any,
    shared_params: Iterable[Tensor] | nn.Module | Tensor,
    aggregator: Aggregator,
    *,
    representation: Tensor | None = None,
    task_params: Iterable[Tensor] | None = None,
    retain_graph: bool = False,
    method: str = "auto",
    scaler: Any = None,
) -> Tensor | None:
    r"""Back-propagate per-task ``losses``, aggregating the shared parameters' gradients with ``aggregator``.

    Like ``Tensor.backward`` it *accumulates* into ``.grad``: the shared parameters receive the
    aggregated update of the per-task gradients; every other parameter that the losses depend on (the
    task heads, found in the autograd graph unless ``task_params`` lists them) receives the gradient of
    :math:`\sum_i L_i`. With ``representation`` (a shared feature tensor, MGDA-UB style) the per-task
    gradients are taken with respect to it instead of the parameters, which is cheaper: the
    aggregated feature gradient is then back-propagated once through the shared trunk.

    .. math::
        J = \big[\nabla_\theta L_1; \dots; \nabla_\theta L_T\big],\qquad
        \theta.\mathrm{grad} \mathrel{+}= \mathcal A(J),\qquad \phi_h.\mathrm{grad} \mathrel{+}= \nabla_{\phi_h} \sum_i L_i

    where:
        - :math:`\theta` are ``shared_params`` (or, with ``representation`` :math:`z`, :math:`J` is taken
          w.r.t. :math:`z` and :math:`\theta.\mathrm{grad} \mathrel{+}= (\partial z/\partial\theta)^\top\mathcal A(J_z)`);
        - :math:`\phi_h` are the task-specific parameters; :math:`\mathcal A` is the aggregator.

    Args:
        losses: per-task scalar losses in any form a :class:`~awloss.Weighting` accepts (varargs excluded):
            a sequence, a 1-D tensor or a mapping of names to losses.
        shared_params: the shared parameters (an iterable, a module, or a tensor).
        aggregator: an :class:`~awloss.aggregation.Aggregator`, e.g. ``awloss.get("upgrad")``.
        representation: optional shared feature tensor; gradients are aggregated with respect to it. Paths
            from ``shared_params`` to the losses that bypass it receive ``∇ΣLᵢ``, like the heads. Refused
            for aggregators with ``state_per_column`` (DB-MTL).
        task_params: the task-specific parameters; by default every other leaf of the graph.
        retain_graph: keep the graph for another backward, like ``Tensor.backward``.
        method: how the per-task gradients are computed: ``"loop"`` (one ``autograd.grad`` per task into
            buffers reused across calls; fastest on CPU in our benchmark), ``"batched"`` (one vectorised
            ``is_grads_batched`` backward; fewer kernel launches on accelerators) or ``"auto"`` (default:
            ``"loop"`` on CPU, ``"batched"`` elsewhere, falling back to the loop with a warning, once, where
            batching cannot work: sparse gradients, reentrant checkpointing, a custom ``autograd.Function``
            not declared vmap-able; ``"batched"`` raises there). ``grad_mean``/``grad_sum`` need no per-task gradients:
            they take one backward of :math:`\sum_i L_i` whatever the method (not under DDP or ``task_params``).
        scaler: a ``torch.amp.GradScaler`` (fp16 training; pass the *unscaled* losses). The per-task
            gradients are taken of the scaled losses (no fp16 underflow) and unscaled before aggregating,
            so methods whose update does not scale with :math:`J` (Nash-MTL, DB-MTL's log) stay exact;
            ``.grad`` receives the scaled update for ``scaler.step``. A non-finite Jacobian is not
            aggregated (the aggregator's state is untouched): it reaches ``.grad`` so that ``scaler.step``
            skips the step, and ``None`` is returned.

    Under ``torch.distributed`` (DDP) the loss values, the per-task gradients of the shared parameters and
    the heads' gradients are averaged over the ranks (one all-reduce), so every rank aggregates the
    Jacobian of the global batch and applies the same update; ``.grad`` is written without DDP's reducer
    (no "marked ready twice", ``no_sync()`` is harmless), see :mod:`awloss.distributed`.

    Returns:
        The aggregator's weights ``Tensor[T]`` (detached), or ``None`` for non-weighted aggregators (GradDrop).

    Example:
        >>> import torch, awloss
        >>> _ = torch.manual_seed(0)
        >>> trunk, heads = torch.nn.Linear(3, 4), torch.nn.ModuleList([torch.nn.Linear(4, 1) for _ in range(2)])
        >>> x = torch.randn(8, 3)
        >>> feats = trunk(x)
        >>> losses = [heads[0](feats).pow(2).mean(), heads[1](feats).abs().mean()]
        >>> w = awloss.backward(losses, trunk.parameters(), awloss.get("grad_sum"))
        >>> w
        tensor([1., 1.])
        >>> heads[0].weight.grad is not None and trunk.weight.grad is not None
        True

    References:
        Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018 (MGDA-UB).
        Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (``mtl_backward``).

    Note:
        TorchJD's ``mtl_backward`` stores the Jacobian in ``.jac`` and gives each head its own task's
        gradient; we write the aggregated update directly and give the heads ``∇ΣLᵢ``. For DB-MTL the
        losses are log-transformed first (:meth:`Aggregator.transform_losses`), heads included.
    """
    if not isinstance(aggregator, Aggregator):
        raise TypeError(f"Argument `aggregator` must be an awloss Aggregator, got {type(aggregator).__name__}.")
    if method not in ("auto", "batched", "loop"):
        raise ValueError(f"Argument `method` must be 'auto', 'batched' or 'loop', got {method!r}.")
    items, names = _split((losses,))
    L, _ = as_loss_vector((losses,), num_tasks=None, task_names=None)  # validation only
    distributed = is_distributed()
    if not L.requires_grad and not distributed:  # under DDP: checked on every rank together (sync_task_losses)
        raise ValueError("Argument `losses` does not require grad: none of the losses depends on a parameter.")
    mode = _checks.check_mode(aggregator)
    with _checks.step(aggregator, read=not distributed):  # the previous step's flags are read once, here
        error = None
        if distributed:  # an error (this step's or a deferred one) travels with the header collective
            try:
                _checks.poll(aggregator)
                if mode is not None:  # under DDP the header is read on the host anyway: check now
                    _report_losses(aggregator, L.detach(), names)
            except Exception as e:  # raised on every rank by sync_task_losses
                error = e
        elif mode is not None:  # the losses' check, a device flag read at the next step
            Ld = L.detach()
            _checks.push(aggregator, Ld.sum(), lambda m: _report_losses(m, Ld, names), mode)
        return _backward(
            items, names, error, L, distributed, shared_params, aggregator, representation, task_params,
            retain_graph, method, scaler, mode,
        )


def _report_sum_grad(_: Any) -> None:
    raise ValueError("The gradient of the sum of the losses contains NaN or inf (or overflows float).")


def _report_losses(_: Any, L: Tensor, names: Any) -> None:
    finite = torch.isfinite(L)
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0, 0])
        label = f"`{names[i]}`" if names else f"`losses[{i}]`"
        raise ValueError(f"Loss {label} must be finite, got {L[i].item()}.")


def _backward(  # noqa: PLR0913 - the body of backward() after its checks
    items: list[Any],
    names: Any,
    error: BaseException | None,
    L: Tensor,
    distributed: bool,
    shared_params: Any,
    aggregator: Aggregator,
    representation: Tensor | None,
    task_params: Any,
    retain_graph: bool,
    method: str,
    scaler: Any,
    mode: str | None,
) -> Tensor | None:
    items = [
        (x if x.dim() == 0 else x.reshape(())) if isinstance(x, Tensor) and x.requires_grad else None for x in items
    ]
    if any(x is None for x in items):  # constants and absent tasks have zero gradients
        zero = L.new_zeros(()) * L.sum()
        items = [zero if x is None else x for x in items]
    items = [x if x.dtype == L.dtype else x.to(L.dtype) for x in items]
    if distributed:  # loss values of the global batch, gradient paths local (e.g. for DB-MTL's log); a rank's
        items = sync_task_losses(items, names, error)  # error, or ranks that disagree, raise on every rank
    items = aggregator.transform_items(items)
    T = len(items)
    scale = None
    if scaler is not None and scaler.is_enabled():
        items = [scaler.scale(x) for x in items]
        scale = float(scaler.get_scale())
    shared = _as_params(shared_params, "shared_params")
    if not shared:  # an exhausted generator (made once outside the training loop) lands here too
        raise ValueError("Argument `shared_params` is empty (or nothing in it requires grad).")
    exclude = {id(p) for p in shared}
    if representation is not None:
        if not isinstance(representation, Tensor) or not representation.requires_grad:
            raise ValueError("Argument `representation` must be a tensor that requires grad (a shared feature).")
        if aggregator.state_per_column:
            raise ValueError(
                f"{type(aggregator).__name__} keeps state per column of the Jacobian (one entry per parameter); "
                "with `representation=` the columns are samples × features, which change meaning every batch. "
                "Pass the shared parameters without `representation=`."
            )
        exclude.add(id(representation))
    if is_sharded(shared):  # FSDP2: the Gramian from the shards (awloss.distributed)
        return fsdp_backward(items, shared, aggregator, retain_graph, representation=representation, scale=scale)
    uniform = getattr(aggregator, "_uniform", False) and scale is None  # update = c·∇ΣLᵢ: one backward pass
    if not (uniform and representation is None and task_params is None and not distributed):
        method = _resolve_method(method, items, representation)
    cache = _cache_of(aggregator)
    heads: list[Tensor] = []
    if task_params is not None:
        heads = [p for p in _as_params(task_params, "task_params") if id(p) not in exclude]
    elif representation is not None or method != "loop" or distributed:
        stop = representation.grad_fn if representation is not None else None
        heads = _leaves(items, stop, exclude)

    # full per-task backward passes would fire DDP's reducer hooks: under DDP, autograd.grad only
    if representation is None and (method == "loop" or uniform) and task_params is None and not distributed:
        if uniform:  # whatever `method`: no per-task gradient is needed
            (flat,), used = _task_grads([torch.stack(items).sum()], shared, retain_graph, cache, fn=_loop_backward)
            if not any(used):
                raise ValueError("No parameter in `shared_params` is used by the losses.")
            aggregator._checks = []
            w = aggregator.weights_from_gramian(flat.new_zeros(T, T)).to(flat.dtype)  # constant weights, G unused
            aggregator._set_weights(w)
            if mode is not None:
                _checks.push(aggregator, flat.sum(), _report_sum_grad, mode)
            update = flat * w[0]
            off = 0
            for p, u in zip(shared, used):
                if u:
                    _accumulate(p, update[off : off + p.numel()].view(p.shape))
                off += p.numel()
            return aggregator._weights
        flat, used = _task_grads(items, shared, retain_graph, cache, fn=_loop_backward)  # heads get ∇ΣLᵢ
        if not any(used):
            raise ValueError("No parameter in `shared_params` is used by the losses.")
        (update,), overflow = _aggregate_scaled(aggregator, [flat], T, scale)
        off = 0
        for p, u in zip(shared, used):
            if u:
                _accumulate(p, update[off : off + p.numel()].view(p.shape))
            off += p.numel()
        return None if overflow else aggregator._weights
    if representation is None:
        blocks, head_grads = _task_grads(items, shared, heads, retain_graph, method, cache)
        if distributed:  # the Jacobian of the global batch and the heads' mean gradients, one layout, one collective
            blocks, head_grads = reduce_jacobian(blocks, head_grads, shared, heads, T)
        used = [(p, b) for p, b in zip(shared, blocks) if b is not None]
        if not used:
            raise ValueError("No parameter in `shared_params` is used by the losses.")
        jac = [b for _, b in used]
        updates, overflow = _aggregate_scaled(aggregator, jac, T, scale)
        for (p, _), u in zip(used, updates):
            _accumulate(p, u)
    elif distributed:
        raise NotImplementedError(
            "awloss.backward(representation=...) is not supported under torch.distributed yet: pass the shared "
            "parameters instead (their per-task gradients are averaged over the ranks)."
        )
    else:
        (Jz,), _ = _task_grads(items, [representation], [], True, method, cache)
        if Jz is None:
            raise ValueError("The losses do not depend on `representation`.")
        (update_z,), overflow = _aggregate_scaled(aggregator, [Jz], T, scale)
        _representation_write(items, representation, update_z, shared, heads, retain_graph)
        return None if overflow else aggregator._weights
    for p, g in zip(heads, head_grads):
        if g is not None:
            _accumulate(p, g)
    return None if overflow else aggregator._weights
