"""The gramian engine (``method="gramian"``): ``G = JJᵀ`` layer by layer, without the Jacobian.

Post hoc, from the graph the forward already built: a walk from the losses finds each shared parameter's
uses (:mod:`._sites`) and the tensors their nodes saved (a Linear's input ``A``, a norm's statistics); see
:mod:`._gram_plan`. One ``autograd.grad`` per task (on accelerators one vmap-ed backward for all tasks) then
asks only for the gradients ``Δ_t`` of those nodes' *outputs* (``GradientEdge`` inputs), so autograd skips
every weight gradient. Per parameter: a Linear-like one adds
``Σ (AAᵀ) ⊙ (Δ_sΔ_tᵀ)`` to ``G`` (the per-sample identity) or ``J_pJ_pᵀ`` with ``J_p = Δᵀ A`` built in chunks
of output rows, whichever costs fewer flops; the others add ``J_pJ_pᵀ`` of their own block; a parameter
with a use the engine does not know (an LSTM, a custom op) is an input of the same passes, and its block
is its own per-task gradient. The update needs no further backward: ``Σ_t w_t Δ_t`` per node gives each
covered parameter its gradient, ``wᵀJ_p`` the others; the heads get ``∇ΣLᵢ`` from the passes.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge

from .._checks import host_reads_are_free
from ..aggregation._precision import gramian_fits
from ._engine import Engine, Jacobian, accumulate, guarded, missing_params, vmap_failure
from ._gather import Losses
from ._gram_plan import Plan, costs, plan
from ._loop import _ENGINE
from ._range import underflow_check

CHUNK_BYTES = 32 * 2**20  # the largest per-layer block J_p (or a chunk of its rows) built at once
_UNBATCHED: set[tuple[int, ...]] = set()  # models (their shared parameters' ids) whose backward failed under vmap


def _key(shared: list[Tensor]) -> tuple[int, ...]:
    return (len(shared), *map(id, shared[:8]))


def _unbatchable(shared: list[Tensor], e: BaseException) -> None:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    _UNBATCHED.add(_key(shared))
    warnings.warn(
        f"awloss.backward(method='gramian'): the model's backward cannot be batched with vmap ({first}); this "
        "model's steps take one pass per task from now on.",
        UserWarning,
        stacklevel=5,
    )


def wide(dtype: torch.dtype) -> torch.dtype:
    """The dtype ``G`` and the update are computed in: at least float32."""
    return torch.promote_types(dtype, torch.float32)


def _rows_gramian(a: Tensor, d: Tensor, dt: torch.dtype) -> Tensor:
    """``G`` in ``dt`` of ``J_t = d_tᵀ a`` (``a[N, i]``, ``d[T, N, o]``) by the cheaper of the per-sample identity
    and ``J`` built in chunks of output rows (at most ``CHUNK_BYTES`` each)."""
    T, N, o = d.shape
    i = a.shape[1]
    d = d.to(dt)  # float16/bfloat16 (autocast): G in float32 at least, whose squares do not overflow
    a = a.to(dt)
    by_j, by_identity = costs(T, N, i, o)
    if by_identity < by_j:  # G[:, t] = <d_s, K d_t>, one task at a time (no [T, N, o] temporary)
        K, flat = a @ a.T, d.reshape(T, -1)
        return torch.stack([flat @ (K @ d[t]).reshape(-1) for t in range(T)], dim=1)
    step = max(1, CHUNK_BYTES // max(1, T * i * d.element_size()))
    G = d.new_zeros(T, T)
    for c in range(0, o, step):
        J = torch.matmul(d[:, :, c : c + step].transpose(1, 2), a).reshape(T, -1)
        G += J @ J.T
    return G


class GramianEngine(Engine):
    """``method="gramian"`` for :class:`~awloss.aggregation.GramianAggregator` s: the Jacobian is never formed.

    ``batched``: the ``T`` passes as one vmap-ed backward (``is_grads_batched``; what ``"auto"`` does on
    accelerators), unless the graph cannot batch (then one pass per task); ``plan``: one made already."""

    name = "gramian"

    def __init__(self, shared: list[Tensor], heads: list[Tensor] | None, batched: bool = False,
                 plan: Plan | None = None, cache: dict[Any, Any] | None = None) -> None:
        self.shared, self.heads, self.batched, self.plan = shared, heads, batched, plan
        self.cache = {} if cache is None else cache
        self.flat: Tensor | None = None  # the loop passes' blocks side by side, [T, Σ numel], reused across calls

    def jacobian(self, losses: Losses, retain_graph: bool) -> Jacobian:
        items, T = losses.items, len(losses.items)
        p = self.plan if self.plan is not None else plan(items, self.shared, self.heads)
        if p.reentrant:
            raise ValueError(
                "Argument `method='gramian'` cannot see the parameters inside reentrant checkpointing "
                "(torch.utils.checkpoint with use_reentrant=True): their uses are not in the graph the losses built. "
                "Pass use_reentrant=False to torch.utils.checkpoint, or method='loop'."
            )
        self.plan = None  # a plan holds the graph's saved tensors: used once
        self.heads, self.covered, self.fallback = p.heads, p.covered, p.fallback
        self.blocked = p.fallback + p.direct
        nodes = list(dict.fromkeys(u.node for _, uses in self.covered for u in uses))
        inputs: list[Any] = [GradientEdge(n, 0) for n in nodes] + self.blocked
        keep = retain_graph or bool(self.heads)
        cols = None
        if self.batched and p.walk.hard is None and p.walk.soft is None and _key(self.shared) not in _UNBATCHED:
            eye = torch.eye(T, dtype=items[0].dtype, device=items[0].device)
            try:  # the graph is kept: if an op has no batching rule, the loop below still has it
                cols = list(self._batched(items, inputs, [eye[:, t] for t in range(T)], True))
            except (RuntimeError, NotImplementedError) as e:
                if not vmap_failure(e):
                    raise
                _unbatchable(self.shared, e)
        if cols is None:
            cols = self._loop(items, inputs, keep)
        self.head_grads: list[Tensor | None] = []
        if self.heads:  # ∇ΣLᵢ of the heads: one pass that stops at them (not T passes asking for every head)
            total = torch.stack(items).sum()
            self.head_grads = list(guarded(self._grads, total, self.heads, retain_graph))
        self.delta = dict(zip(nodes, cols[: len(nodes)]))
        self.blocks = cols[len(nodes) :]
        if not self.covered and all(b is None for b in self.blocks):
            raise missing_params()
        G, check = self._gramian(T, items[0])
        return Jacobian([], gramian=G, check=check, dtype=wide(items[0].dtype))

    def _loop(self, items: list[Tensor], inputs: list[Any], keep: bool) -> list[Tensor | None]:
        """One pass per task, each task's gradients copied into ``[T, ...]`` buffers as they come: the blocks into
        views of one flat ``[T, Σ numel]`` buffer kept across calls (no fresh memory to fault in each step;
        ``G`` of the blocks is then one product), the ``Δ`` into buffers of their own."""
        T, k0 = len(items), len(inputs) - len(self.blocked)
        views = self._views(T)
        cols: list[Tensor | None] = [None] * len(inputs)
        got = [[False] * T for _ in inputs]
        for t, x in enumerate(items):
            gs = guarded(self._grads, x, inputs, keep or t < T - 1)
            for k, g in enumerate(gs):
                if g is None:
                    continue
                if cols[k] is None:
                    cols[k] = views[k - k0] if views and k >= k0 else torch.empty((T, *g.shape), dtype=g.dtype,
                                                                                   device=g.device)
                cols[k][t].copy_(g.to_dense() if g.layout != torch.strided else g)  # type: ignore[index]
                got[k][t] = True
        for k, col in enumerate(cols):  # a task that does not reach an input: its row is 0
            if col is not None and not all(got[k]):
                for t in range(T):
                    if not got[k][t]:
                        col[t].zero_()  # (not col[list] = 0: its index tensor would be copied to the device)
        if views:
            for k, col in enumerate(cols[k0:]):
                if col is None:
                    views[k].zero_()  # unused: a zero column of the flat buffer (its .grad stays untouched)
        else:
            self.flat = None
        return cols

    def _views(self, T: int) -> list[Tensor]:
        """Per blocked parameter, its ``[T, *shape]`` view of the flat buffer (none if their dtypes differ)."""
        ps = self.blocked
        if not ps or any(p.dtype != ps[0].dtype or p.layout != torch.strided for p in ps):
            self.flat = None
            return []
        key = ("gramian", T, *((tuple(p.shape), p.dtype, p.device) for p in ps))
        if key not in self.cache:
            self.cache.pop(self.cache.pop("gramian", None), None)  # one model's buffer at a time
            flat = torch.empty(T, sum(p.numel() for p in ps), dtype=ps[0].dtype, device=ps[0].device)
            offsets = [0]
            for p in ps:
                offsets.append(offsets[-1] + p.numel())
            self.cache["gramian"] = key
            self.cache[key] = (flat, [flat[:, a:b].view(T, *p.shape) for p, a, b in zip(ps, offsets, offsets[1:])])
        self.flat, views = self.cache[key]
        return list(views)

    @staticmethod
    def _batched(items: list[Tensor], inputs: list[Any], eye: list[Tensor], keep: bool) -> tuple[Tensor | None, ...]:
        return torch.autograd.grad(items, inputs, eye, retain_graph=keep, is_grads_batched=True, allow_unused=True)

    @staticmethod
    def _grads(loss: Tensor, inputs: list[Any], retain: bool) -> tuple[Tensor | None, ...]:
        if _ENGINE is None or type(loss) is not Tensor or torch.compiler.is_compiling():
            return torch.autograd.grad(loss, inputs, retain_graph=retain, allow_unused=True)
        # torch.autograd.grad minus its per-call Python checks, as the loop engine does
        out: tuple[Tensor | None, ...] = _ENGINE.run_backward(
            (loss,), (torch.ones_like(loss),), retain, False, tuple(inputs), True, False
        )
        return out

    def _gramian(self, T: int, like: Tensor) -> tuple[Tensor, Any]:
        """``G`` in float32 (float64 for float64 losses) and, on accelerators, the deferred check on its range
        to make if the aggregator checks (a callable: :func:`._range.underflow_check`); on the CPU a ``G`` that
        left float32's range is redone in float64 (:mod:`awloss.aggregation._precision`)."""
        dt = wide(like.dtype)
        G = self._products(T, dt)
        if dt == torch.float64:
            return G, None
        n, rows = sum(p.numel() for p in self.shared), self._rows()
        if not host_reads_are_free(like):
            return G, lambda: underflow_check(G, n, rows)
        if gramian_fits(G, n, lambda t: any(bool(x[t].any()) for x in rows)):
            return G, None
        return self._products(T, torch.float64), None

    def _blocks(self) -> list[Tensor]:
        """The per-parameter blocks ``[T, ...]`` (the flat buffer that holds them side by side, if any)."""
        return [self.flat] if self.flat is not None else [b for b in self.blocks if b is not None]

    def _rows(self) -> list[Tensor]:
        """Every tensor with one row per task that ``G`` is made of (the ``Δ`` and the blocks)."""
        return [d for d in self.delta.values() if d is not None] + self._blocks()

    def _products(self, T: int, dt: torch.dtype) -> Tensor:
        G = torch.zeros(T, T, dtype=dt, device=self.shared[0].device)
        for p, uses in self.covered:
            ds = [self.delta[u.node] for u in uses]
            if any(d is None for d in ds):
                uses = [u for u, d in zip(uses, ds) if d is not None]
                ds = [d for d in ds if d is not None]
                if not uses:
                    continue
            rows = [u.rows for u in uses if u.rows is not None]
            if len(rows) == len(uses) and all(u.transposed == uses[0].transposed for u in uses):
                dr = [(d if u.alpha == 1 else d * u.alpha).reshape(T, r.shape[0], -1) for u, r, d in zip(uses, rows, ds)]
                a = rows[0] if len(rows) == 1 else torch.cat(rows)  # a parameter used twice: its rows side by side
                d = dr[0] if len(dr) == 1 else torch.cat(dr, dim=1)
                G = G + _rows_gramian(a, d, torch.promote_types(dt, d.dtype)).to(dt)
                continue
            if len(uses) == 1 and uses[0].block is not None:
                J = uses[0].block(ds[0]).reshape(T, -1)
            else:
                J = sum(u.grad(d) for u, d in zip(uses, ds)).reshape(T, -1)  # type: ignore[union-attr]
            J = J.to(torch.promote_types(dt, J.dtype))
            G = G + (J @ J.T).to(dt)
        for J in self._blocks():
            J = J.reshape(T, -1)
            J = J.to(torch.promote_types(dt, J.dtype))  # (a copy only for float16/bfloat16 parameters or a float64 redo)
            G = G + (J @ J.T).to(dt)
        return 0.5 * (G + G.T)

    def write(self, jac: Jacobian, updates: list[Tensor], retain_graph: bool) -> None:
        (w,) = updates
        dw = {n: None if d is None else torch.tensordot(w.to(wide(d.dtype)), d.to(wide(d.dtype)), dims=1)[None]
              for n, d in self.delta.items()}
        for p, uses in self.covered:
            gs = [u.grad(d)[0] for u in uses if (d := dw[u.node]) is not None]
            if gs:
                accumulate(p, gs[0] if len(gs) == 1 else sum(gs))  # type: ignore[arg-type]
        flat = None if self.flat is None else w.to(self.flat.dtype) @ self.flat  # wᵀJ of every block at once
        offset = 0
        for p, J in zip(self.blocked, self.blocks):
            if J is not None:
                accumulate(p, torch.tensordot(w.to(J.dtype), J, dims=1) if flat is None
                           else flat[offset : offset + p.numel()].view(p.shape))
            offset += p.numel()
        for p, g in zip(self.heads or [], self.head_grads):
            if g is not None:
                accumulate(p, g)
        self.delta, self.blocks, self.head_grads, self.flat = {}, [], [], None

