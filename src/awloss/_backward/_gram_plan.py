"""The gramian engine's plan, made from the graph before any backward pass, and what it would save.

One walk from the losses finds each shared parameter's uses (:mod:`._sites`) and sorts the parameters:
*covered* (every use has a rule; the passes ask for the gradients ``Δ`` of the uses' outputs), *direct* (a
rule, but the per-task block costs what the ``Δ`` route costs, so autograd computes it in the passes) and
*fallback* (a use without a rule: its own per-task block). The same walk records what would stop a batched
(vmap-ed) backward (:mod:`._graph`).

The cost model counts multiply-adds. For a Linear-like parameter with input ``A[N, i]``, output width ``o``
and ``T`` tasks: per-task weight gradients ``J = Δᵀ A`` then ``JJᵀ`` cost ``TNio + T²io`` (what the
T-backward floor pays for that weight, plus ``JJᵀ``); the per-sample identity ``Σ (AAᵀ) ⊙ (Δ_sΔ_tᵀ)`` costs
``N²(i + To) + T²No``. A convolution's weight gradient costs ``T·numel·positions`` either way. ``auto``
picks the engine for speed when the identity saves at least ``SAVED_SHARE`` of the floor's estimated
backward cost (input and weight gradients, ``2TNio`` per Linear) and at least ``SAVED_MIN`` multiply-adds:
below that, the engine's own per-layer work is not paid back (``benchmarks/aggregators.py --workloads``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ._graph import _REENTRANT, Walk, _classify
from ._sites import Use, use_of

DIRECT_BYTES = 64 * 2**20  # in all, the per-task blocks that autograd computes directly
SAVED_SHARE = 0.3  # auto: the identity must save this share of the floor's estimated backward cost ...
SAVED_MIN = 2.5e8  # ... and this many multiply-adds (about 5 ms of a CPU core)
PLAN_MIN = 2**20  # auto looks at the graph only when T·n reaches this (smaller Jacobians are cheap anyway)


@dataclass
class Plan:
    covered: list[tuple[Tensor, list[Use]]] = field(default_factory=list)
    direct: list[Tensor] = field(default_factory=list)
    fallback: list[Tensor] = field(default_factory=list)
    heads: list[Tensor] = field(default_factory=list)
    walk: Walk = field(default_factory=Walk)  # hard / soft: what would stop batched passes
    saved: float = 0.0  # multiply-adds the identity saves over per-task weight gradients
    floor: float = 0.0  # the T-backward floor's estimated multiply-adds for the parameters with a cost model
    unknown: int = 0  # elements of the fallback parameters (no cost model)
    numel: int = 0  # elements of the shared parameters the losses reach

    @property
    def reentrant(self) -> bool:
        """Reentrant checkpointing: the parameters inside it are not in the graph the losses built."""
        return self.walk.hard == _REENTRANT

    def pays(self) -> bool:
        """Whether the gramian engine should be faster than the Jacobian path (``method="auto"``)."""
        if self.reentrant or self.unknown > 0.1 * self.numel:
            return False
        return self.saved >= SAVED_MIN and self.saved >= SAVED_SHARE * self.floor


def graph(items: list[Tensor]) -> tuple[dict[int, Any], dict[Any, list[tuple[Any, int]]], list[Tensor], Walk]:
    """The leaves' AccumulateGrad nodes by ``id(variable)``, every node's consumers ``(node, slot)``, the
    leaves, and what blocks batching."""
    accs: dict[int, Any] = {}
    consumers: dict[Any, list[tuple[Any, int]]] = {}
    leaves: list[Tensor] = []
    seen: set[Any] = set()
    blocks = Walk()
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
        if blocks.hard is None or blocks.hard != _REENTRANT:
            _classify(fn, blocks)
        for slot, (nxt, _) in enumerate(fn.next_functions):
            if nxt is not None:
                consumers.setdefault(nxt, []).append((fn, slot))
                stack.append(nxt)
    return accs, consumers, leaves, blocks


def costs(T: int, N: int, i: int, o: int) -> tuple[float, float]:
    """Multiply-adds of ``G``'s share for one Linear-like weight: ``(J = Δᵀ A then JJᵀ, the per-sample identity)``."""
    return T * N * o * i + T * T * o * i, N * N * (i + T * o) + T * T * N * o


def _rows(uses: list[Use]) -> tuple[int, int] | None:
    """``(N, i)`` of a parameter whose every use is Linear-like in the same orientation, else ``None``."""
    rows = [u.rows for u in uses if u.rows is not None]
    if rows and len(rows) == len(uses) and all(u.transposed == uses[0].transposed for u in uses):
        return sum(r.shape[0] for r in rows), rows[0].shape[1]
    return None


def _conv_cost(p: Tensor, uses: list[Use], T: int) -> float:
    """The floor's multiply-adds for a convolution weight's per-task gradients and the input gradients."""
    total = 0.0
    for u in uses:
        x, stride = getattr(u.node, "_saved_input", None), getattr(u.node, "_saved_stride", None)
        if x is not None and stride is not None and p.dim() > 2:
            positions = x.shape[0] * math.prod(x.shape[2:]) / max(1, math.prod(stride))
            total += 2 * T * p.numel() * positions
    return total


def through_casts(acc: Any, consumers: dict[Any, list[tuple[Any, int]]]) -> list[tuple[Any, int]]:
    """The consumers of a parameter, looking through the dtype casts autocast inserts (``ToCopyBackward0``: the
    cast weight's consumers, each a use of the same shape; the gradient through a cast is the gradient cast back)."""
    out = []
    for n, s in consumers.get(acc, ()):
        cast = type(n).__name__ == "ToCopyBackward0" and consumers.get(n)
        out.extend(consumers[n] if cast else [(n, s)])
    return out


def _on(u: Use, p: Tensor) -> bool:
    """Whether the tensors a use saved live on the parameter's device (a cast may also have moved it)."""
    saved = u.rows if u.rows is not None else getattr(u.node, "_saved_input", None)
    return saved is None or saved.device == p.device


def plan(items: list[Tensor], shared: list[Tensor], heads: list[Tensor] | None) -> Plan:
    T = len(items)
    accs, consumers, leaves, blocks = graph(items)
    ids = {id(p) for p in shared}
    out = Plan(heads=[v for v in leaves if id(v) not in ids] if heads is None else heads, walk=blocks)
    held = 0
    for p in shared:
        if p.grad_fn is not None:  # a non-leaf "parameter": its own per-task gradient
            out.fallback.append(p)
            out.unknown += p.numel()
            out.numel += p.numel()
            continue
        acc = accs.get(id(p))
        if acc is None:
            continue  # not reached by the losses: its .grad stays as it is
        out.numel += p.numel()
        uses = [use_of(n, s, p, consumers) for n, s in through_casts(acc, consumers)]
        uses = [u if u is None or _on(u, p) else None for u in uses]
        if not uses or any(u is None for u in uses):
            out.fallback.append(p)
            out.unknown += p.numel()
            continue
        known: list[Use] = [u for u in uses if u is not None]
        shape = _rows(known)
        cheaper = False
        if shape is not None:
            N, i = shape
            direct_cost, identity_cost = costs(T, N, i, p.numel() // i)
            cheaper = identity_cost < direct_cost
            out.floor += 2 * T * N * p.numel()
            out.saved += max(0.0, direct_cost - identity_cost)
        else:
            out.floor += _conv_cost(p, known, T)
        if not cheaper and held + T * p.nbytes <= DIRECT_BYTES:
            out.direct.append(p)
            held += T * p.nbytes
        else:
            out.covered.append((p, known))
    return out
