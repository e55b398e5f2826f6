"""The gramian engine (``method="gramian"``): ``G = JJᵀ`` layer by layer, without the Jacobian.

Post hoc, from the graph the forward already built: a walk from the losses finds each shared parameter's
uses (:mod:`._sites`) and the tensors their nodes saved (a Linear's input ``A``, a norm's statistics). One
``autograd.grad`` per task then asks only for the gradients ``Δ_t`` of those nodes' *outputs*
(``GradientEdge`` inputs), so autograd skips every weight gradient. Per parameter: a Linear-like one adds
``Σ (AAᵀ) ⊙ (Δ_sΔ_tᵀ)`` to ``G`` (the per-sample identity) or ``J_pJ_pᵀ`` with ``J_p = Δᵀ A`` built in chunks
of output rows, whichever costs fewer flops; the others add ``J_pJ_pᵀ`` of their own block; a parameter
with a use the engine does not know (an LSTM, a custom op) is an input of the same passes, and its block
is its own per-task gradient. The update needs no further backward: ``Σ_t w_t Δ_t`` per node gives each
covered parameter its gradient, ``wᵀJ_p`` the others; the heads get ``∇ΣLᵢ`` from the passes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge

from ._engine import Engine, Jacobian, accumulate, guarded, missing_params
from ._gather import Losses
from ._loop import _ENGINE
from ._sites import Use, use_of

CHUNK_BYTES = 32 * 2**20  # the largest per-layer block J_p (or a chunk of its rows) built at once
DIRECT_BYTES = 64 * 2**20  # in all, the per-task blocks that autograd computes directly (see _direct)


def _graph(items: list[Tensor]) -> tuple[dict[int, Any], dict[Any, list[tuple[Any, int]]], list[Tensor]]:
    """The leaves' AccumulateGrad nodes by ``id(variable)``, every node's consumers ``(node, slot)``, the leaves."""
    accs: dict[int, Any] = {}
    consumers: dict[Any, list[tuple[Any, int]]] = {}
    leaves: list[Tensor] = []
    seen: set[Any] = set()
    stack = [x.grad_fn for x in items if x.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None:
            accs[id(var)] = fn
            leaves.append(var)
            continue
        for slot, (nxt, _) in enumerate(fn.next_functions):
            if nxt is not None:
                consumers.setdefault(nxt, []).append((fn, slot))
                stack.append(nxt)
    return accs, consumers, leaves


def _identity_cheaper(T: int, N: int, i: int, o: int) -> bool:
    """Whether ``Σ (AAᵀ) ⊙ (Δ_sΔ_tᵀ)`` (``N²(i + To) + T²No`` flops) beats ``J = Δᵀ A`` (``TNoi + T²oi``)."""
    return N * N * (i + T * o) + T * T * N * o < T * N * o * i + T * T * o * i


def _rows_gramian(a: Tensor, d: Tensor) -> Tensor:
    """``G`` of ``J_t = d_tᵀ a`` (``a[N, i]``, ``d[T, N, o]``) by the cheaper of the per-sample identity and ``J``
    built in chunks of output rows (at most ``CHUNK_BYTES`` each)."""
    T, N, o = d.shape
    i = a.shape[1]
    a = a.to(d.dtype)
    if _identity_cheaper(T, N, i, o):  # G[:, t] = <d_s, K d_t>, one task at a time (no [T, N, o] temporary)
        K, flat = a @ a.T, d.reshape(T, -1)
        return torch.stack([flat @ (K @ d[t]).reshape(-1) for t in range(T)], dim=1)
    step = max(1, CHUNK_BYTES // max(1, T * i * d.element_size()))
    G = d.new_zeros(T, T)
    for c in range(0, o, step):
        J = torch.matmul(d[:, :, c : c + step].transpose(1, 2), a).reshape(T, -1)
        G += J @ J.T
    return G


def _direct(p: Tensor, uses: list[Use], T: int) -> bool:
    """Whether autograd should compute ``p``'s per-task gradient itself in the passes (its block is then held):
    yes for the uses whose block costs what the Δ route costs (a convolution's, a norm's, a bias's, a Linear
    whose batch is larger than its input width), no where the per-sample identity saves the weight gradients."""
    rows = [u.rows for u in uses if u.rows is not None]
    if len(rows) == len(uses) and all(u.transposed == uses[0].transposed for u in uses):
        N, i = sum(r.shape[0] for r in rows), rows[0].shape[1]
        return not _identity_cheaper(T, N, i, p.numel() // i)
    return True


class GramianEngine(Engine):
    """``method="gramian"`` for :class:`~awloss.aggregation.GramianAggregator` s: the Jacobian is never formed."""

    name = "gramian"

    def __init__(self, shared: list[Tensor], heads: list[Tensor] | None) -> None:
        self.shared, self.heads = shared, heads

    def jacobian(self, losses: Losses, retain_graph: bool) -> Jacobian:
        items, T = losses.items, len(losses.items)
        accs, consumers, leaves = _graph(items)
        ids = {id(p) for p in self.shared}
        if self.heads is None:
            self.heads = [v for v in leaves if id(v) not in ids]
        self.covered: list[tuple[Tensor, list[Use]]] = []
        self.fallback: list[Tensor] = []  # no rule for one of its uses: its own per-task block
        direct: list[Tensor] = []  # a rule, but its per-task block is as cheap as the Δ route (within DIRECT_BYTES)
        held = 0
        for p in self.shared:
            if p.grad_fn is not None:  # a non-leaf "parameter": its own per-task gradient
                self.fallback.append(p)
                continue
            acc = accs.get(id(p))
            if acc is None:
                continue  # not reached by the losses: its .grad stays as it is
            uses = [use_of(n, s, p, consumers) for n, s in consumers.get(acc, ())]
            if not uses or any(u is None for u in uses):
                self.fallback.append(p)
            elif _direct(p, uses, T) and held + T * p.nbytes <= DIRECT_BYTES:  # type: ignore[arg-type]
                direct.append(p)
                held += T * p.nbytes
            else:
                self.covered.append((p, uses))  # type: ignore[arg-type]
        self.blocked = self.fallback + direct
        nodes = list(dict.fromkeys(u.node for _, uses in self.covered for u in uses))
        inputs: list[Any] = [GradientEdge(n, 0) for n in nodes] + self.blocked
        cols: list[Tensor | None] = [None] * len(inputs)
        for t, x in enumerate(items):  # each task's gradients copied into [T, ...] buffers as they come
            gs = guarded(self._grads, x, inputs, retain_graph or t < T - 1 or bool(self.heads))
            for k, g in enumerate(gs):
                if g is not None:
                    if cols[k] is None:
                        cols[k] = torch.zeros((T, *g.shape), dtype=g.dtype, device=g.device)
                    cols[k][t].copy_(g.to_dense() if g.layout != torch.strided else g)  # type: ignore[index]
        self.head_grads: list[Tensor | None] = []
        if self.heads:  # ∇ΣLᵢ of the heads: one pass that stops at them (not T passes asking for every head)
            total = torch.stack(items).sum()
            self.head_grads = list(guarded(self._grads, total, self.heads, retain_graph))
        self.delta = dict(zip(nodes, cols[: len(nodes)]))
        self.blocks = cols[len(nodes) :]
        if not self.covered and all(b is None for b in self.blocks):
            raise missing_params()
        return Jacobian([], gramian=self._gramian(T, items[0]))

    @staticmethod
    def _grads(loss: Tensor, inputs: list[Any], retain: bool) -> tuple[Tensor | None, ...]:
        if _ENGINE is None or type(loss) is not Tensor or torch.compiler.is_compiling():
            return torch.autograd.grad(loss, inputs, retain_graph=retain, allow_unused=True)
        # torch.autograd.grad minus its per-call Python checks, as the loop engine does
        out: tuple[Tensor | None, ...] = _ENGINE.run_backward(
            (loss,), (torch.ones_like(loss),), retain, False, tuple(inputs), True, False
        )
        return out

    def _gramian(self, T: int, like: Tensor) -> Tensor:
        G = like.new_zeros(T, T)
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
                G = G + _rows_gramian(a, d).to(G.dtype)
                continue
            if len(uses) == 1 and uses[0].block is not None:
                J = uses[0].block(ds[0]).reshape(T, -1)
            else:
                J = sum(u.grad(d) for u, d in zip(uses, ds)).reshape(T, -1)  # type: ignore[union-attr]
            G = G + (J @ J.T).to(G.dtype)
        for block in self.blocks:
            if block is not None:
                J = block.reshape(T, -1)
                G = G + (J @ J.T).to(G.dtype)
        return 0.5 * (G + G.T)

    def write(self, jac: Jacobian, updates: list[Tensor], retain_graph: bool) -> None:
        (w,) = updates
        dw = {n: None if d is None else torch.tensordot(w.to(d.dtype), d, dims=1)[None] for n, d in self.delta.items()}
        for p, uses in self.covered:
            gs = [u.grad(d)[0] for u in uses if (d := dw[u.node]) is not None]
            if gs:
                accumulate(p, gs[0] if len(gs) == 1 else sum(gs))  # type: ignore[arg-type]
        for p, J in zip(self.blocked, self.blocks):
            if J is not None:
                accumulate(p, torch.tensordot(w.to(J.dtype), J, dims=1))
        for p, g in zip(self.heads or [], self.head_grads):
            if g is not None:
                accumulate(p, g)
        self.delta, self.blocks, self.head_grads = {}, [], []

