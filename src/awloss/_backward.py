"""``awloss.backward``: per-task gradients of the shared parameters, aggregated into ``.grad``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ._inputs import as_loss_vector
from .aggregation._base import Aggregator, GramianAggregator
from .integrations.distributed import all_reduce_mean_many, is_distributed, sync_losses

__all__ = ["backward"]


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


def _leaves(root: Tensor, stop: Any, exclude: set[int]) -> list[Tensor]:
    """Leaf tensors requiring grad reachable from ``root`` without passing through the node ``stop``."""
    out: list[Tensor] = []
    seen: set[Any] = set()
    stack = [root.grad_fn]
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
            continue
        stack.extend(f for f, _ in fn.next_functions)
    return out


def _per_task_grads(L: Tensor, inputs: list[Tensor], retain: bool, method: str) -> list[Tensor | None]:
    T = L.shape[0]
    if method == "batched":
        eye = torch.eye(T, dtype=L.dtype, device=L.device)
        return list(torch.autograd.grad(L, inputs, eye, retain_graph=retain, is_grads_batched=True, allow_unused=True))
    rows = [
        torch.autograd.grad(L[t], inputs, retain_graph=retain or t < T - 1, allow_unused=True) for t in range(T)
    ]
    out: list[Tensor | None] = []
    for k, p in enumerate(inputs):
        col = [r[k] for r in rows]
        if all(c is None for c in col):
            out.append(None)
        else:
            out.append(torch.stack([torch.zeros_like(p) if c is None else c for c in col]))
    return out


_COMPILED_HINT = (
    "The model's backward cannot be {what} (a model compiled with torch.compile's inductor backend, say): "
    "pass `representation=` (the output of the compiled shared trunk; the per-task gradients are then taken "
    "in eager mode through the heads), or compile with `torch._functorch.config.donated_buffer = False` "
    "and pass `method='loop'`."
)


def _task_grads(L: Tensor, inputs: list[Tensor], retain: bool, method: str) -> list[Tensor | None]:
    """:func:`_per_task_grads` with a clear error for backwards that cannot be batched or replayed."""
    try:
        return _per_task_grads(L, inputs, retain, method)
    except (RuntimeError, NotImplementedError) as e:
        msg = str(e)
        if "BatchedTensorImpl" in msg or "vmap" in msg:
            raise RuntimeError(_COMPILED_HINT.format(what="batched with vmap")) from e
        if "donated buffers" in msg:
            raise RuntimeError(_COMPILED_HINT.format(what="run twice (its buffers are donated)")) from e
        raise


def _aggregate(aggregator: Aggregator, blocks: list[Tensor], T: int) -> list[Tensor]:
    """Aggregate the per-input blocks ``[T, *shape]``; return the update of each block."""
    flat = [b.reshape(T, -1) for b in blocks]
    if isinstance(aggregator, GramianAggregator):
        G = flat[0] @ flat[0].T
        for f in flat[1:]:
            G = G.addmm(f, f.T)
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
    method: str = "batched",
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
        representation: optional shared feature tensor; gradients are aggregated with respect to it.
        task_params: the task-specific parameters; by default every other leaf of the graph.
        retain_graph: keep the graph for another backward, like ``Tensor.backward``.
        method: ``"batched"`` (default: one vectorised backward with ``is_grads_batched``) or ``"loop"``
            (one ``autograd.grad`` per task, for models that ``vmap`` cannot batch).
        scaler: a ``torch.amp.GradScaler`` (fp16 training; pass the *unscaled* losses). The per-task
            gradients are taken of the scaled losses (no fp16 underflow) and unscaled before aggregating,
            so methods whose update does not scale with :math:`J` (Nash-MTL, DB-MTL's log) stay exact;
            ``.grad`` receives the scaled update for ``scaler.step``. A non-finite Jacobian is not
            aggregated (the aggregator's state is untouched): it reaches ``.grad`` so that ``scaler.step``
            skips the step, and ``None`` is returned.

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
    if method not in ("batched", "loop"):
        raise ValueError(f"Argument `method` must be 'batched' or 'loop', got {method!r}.")
    L, _ = as_loss_vector((losses,), num_tasks=None, task_names=None)
    if not L.requires_grad:
        raise ValueError("Argument `losses` does not require grad: none of the losses depends on a parameter.")
    if aggregator.check and not torch.compiler.is_compiling():
        finite = torch.isfinite(L.detach())
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            raise ValueError(f"Loss `losses[{i}]` must be finite, got {L[i].item()}.")
    distributed = is_distributed()
    if distributed:  # loss values of the global batch (gradient paths stay local), e.g. for DB-MTL's log
        L = sync_losses(L)
    L = aggregator.transform_losses(L)
    T = L.shape[0]
    scale = None
    if scaler is not None and scaler.is_enabled():
        L = scaler.scale(L)
        scale = float(scaler.get_scale())
    shared = _as_params(shared_params, "shared_params")
    if representation is None and not shared:
        raise ValueError("Argument `shared_params` is empty (or nothing in it requires grad).")
    exclude = {id(p) for p in shared}
    if representation is not None:
        if not isinstance(representation, Tensor) or not representation.requires_grad:
            raise ValueError("Argument `representation` must be a tensor that requires grad (a shared feature).")
        exclude.add(id(representation))
    if task_params is None:
        stop = representation.grad_fn if representation is not None else None
        heads = _leaves(L, stop, exclude)
    else:
        heads = [p for p in _as_params(task_params, "task_params") if id(p) not in exclude]

    if representation is None:
        # "batched": the heads' gradients come from the same vectorised backward, so the graph is walked once
        # and not retained (models compiled with donated buffers, e.g. torch.compile's inductor, need that)
        one_pass = method == "batched"
        retain = retain_graph or (bool(heads) and not one_pass)
        blocks = _task_grads(L, shared + heads if one_pass else shared, retain, method)
        blocks, head_blocks = blocks[: len(shared)], blocks[len(shared) :]
        used = [(p, b) for p, b in zip(shared, blocks) if b is not None]
        if not used:
            raise ValueError("No parameter in `shared_params` is used by the losses.")
        jac = [b for _, b in used]
        head_grads: list[tuple[Tensor, Tensor]] = []
        if one_pass:
            head_grads = [(h, b.sum(0)) for h, b in zip(heads, head_blocks) if b is not None]
        elif heads and distributed:
            grads = torch.autograd.grad(L.sum(), heads, retain_graph=retain_graph, allow_unused=True)
            head_grads = [(h, g) for h, g in zip(heads, grads) if g is not None]
        if distributed:  # the Jacobian of the global batch (one collective): every rank aggregates the same
            reduced = all_reduce_mean_many(jac + [g for _, g in head_grads])
            jac, head_grads = reduced[: len(jac)], [(h, g) for (h, _), g in zip(head_grads, reduced[len(jac) :])]
        updates, overflow = _aggregate_scaled(aggregator, jac, T, scale)
        for (p, _), u in zip(used, updates):
            _accumulate(p, u)
        for h, g in head_grads:  # by hand, never through DDP's reducer (it would see only the heads)
            _accumulate(h, g)
        if heads and not one_pass and not distributed:
            torch.autograd.backward(L.sum(), inputs=heads, retain_graph=retain_graph)
    elif distributed:
        raise NotImplementedError(
            "awloss.backward(representation=...) is not supported under torch.distributed yet: pass the shared "
            "parameters instead (their per-task gradients are averaged over the ranks)."
        )
    else:
        (Jz,) = _task_grads(L, [representation], True, method)
        if Jz is None:
            raise ValueError("The losses do not depend on `representation`.")
        (update_z,), overflow = _aggregate_scaled(aggregator, [Jz], T, scale)
        if heads:
            torch.autograd.backward(L.sum(), inputs=heads, retain_graph=True)
        if representation.grad_fn is not None and shared:
            torch.autograd.backward(representation, update_z, inputs=shared, retain_graph=retain_graph)
        elif representation.grad_fn is None:
            _accumulate(representation, update_z)
    return None if overflow else aggregator._weights
