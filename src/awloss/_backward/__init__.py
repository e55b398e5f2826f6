"""``awloss.backward``: per-task gradients of the shared parameters, aggregated into ``.grad``.

A short pipeline; each step and each engine is a module of this package (see :func:`backward`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from .. import _checks
from ..aggregation._base import Aggregator
from ..distributed import is_distributed
from ._aggregate import aggregate
from ._aggregate import gramian as _gramian  # noqa: F401  (tests import it from here)
from ._choose import choose_engine
from ._gather import check_arguments, gather_losses, shared_params_of
from ._reduce import reduce_jacobian

__all__ = ["backward"]


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
    memory_budget: int | None = 2**30,
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
            ``is_grads_batched`` backward; fewer kernel launches on accelerators), ``"auto"`` (default:
            ``"loop"`` on CPU, ``"batched"`` elsewhere, falling back to the loop with a warning, once, where
            batching cannot work: sparse gradients, reentrant checkpointing, a custom ``autograd.Function``
            not declared vmap-able; ``"batched"`` raises there), or ``"gramian"``: for a
            :class:`~awloss.aggregation.GramianAggregator` only, :math:`G = JJ^\top` is built layer by layer
            from what the graph saved (a layer's input) and per-task gradients of the layers' outputs, and the
            Jacobian is never formed (``nn.Linear``, the projections of ``nn.MultiheadAttention``, convolutions,
            ``nn.Embedding``, the norms' affine parameters; any other parameter adds its own per-task block;
            see the engines page). ``"auto"`` picks it when the Jacobian would exceed ``memory_budget``, or when its
            count of multiply-adds says the per-sample identity saves at least 30 % of the backward passes
            (wide Linear layers on small batches; never under DDP).
            ``grad_mean``/``grad_sum`` need no per-task gradients:
            they take one backward of :math:`\sum_i L_i` whatever the method (not under DDP or ``task_params``).
        scaler: a ``torch.amp.GradScaler`` (fp16 training; pass the *unscaled* losses). The per-task
            gradients are taken of the scaled losses (no fp16 underflow) and unscaled before aggregating,
            so methods whose update does not scale with :math:`J` (Nash-MTL, DB-MTL's log) stay exact;
            ``.grad`` receives the scaled update for ``scaler.step``. A non-finite Jacobian is not
            aggregated (the aggregator's state is untouched): it reaches ``.grad`` so that ``scaler.step``
            skips the step, and ``None`` is returned.
        memory_budget: with ``method="auto"``, the most bytes the Jacobian ``T·n·itemsize`` of the shared
            parameters may take (default 1 GiB): above it a ``GramianAggregator`` uses the ``"gramian"`` engine
            (not under DDP, nor with ``representation=``); ``None``: never. Smaller models keep the loop or the
            batched engine.

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

    The steps, each its own module of this package: gather the losses (:mod:`._gather`) → choose an
    engine (:mod:`._choose`: loop, batched, representation, summed, gramian or fsdp2) → the engine's Jacobian
    (or Gramian) and the heads' gradient → the reduction across ranks (:mod:`._reduce`, the one place; under
    FSDP2 the Gramian of the shards) → the aggregator (:mod:`._aggregate`) → the engine writes ``.grad``.

    Note:
        TorchJD's ``mtl_backward`` stores the Jacobian in ``.jac`` and gives each head its own task's
        gradient; we write the aggregated update directly and give the heads ``∇ΣLᵢ``. For DB-MTL the
        losses are log-transformed first (:meth:`Aggregator.transform_losses`), heads included.
    """
    check_arguments(aggregator, method)
    with _checks.step(aggregator, read=not is_distributed()):  # the previous step's flags, read once here
        return _backward(
            losses, shared_params, aggregator, representation, task_params, retain_graph, method, scaler, memory_budget
        )


def _backward(  # noqa: PLR0913 - backward()'s steps, inside the checks' step
    losses: Any, shared_params: Any, aggregator: Any, representation: Any, task_params: Any,
    retain_graph: bool, method: str, scaler: Any, memory_budget: int | None = None,
) -> Tensor | None:
    task = gather_losses(losses, aggregator, scaler)
    shared = shared_params_of(shared_params)
    engine = choose_engine(task, shared, aggregator, representation, task_params, method, memory_budget)
    jac = reduce_jacobian(engine.jacobian(task, retain_graph), len(task.items))
    updates, overflow = aggregate(aggregator, jac, len(task.items), task.scale)
    engine.write(jac, updates, retain_graph)
    return None if overflow else aggregator._weights
