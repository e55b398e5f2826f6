"""One walk over the autograd graph: the task heads (leaves that are not shared), and what blocks batching."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

_SPARSE = "a sparse gradient (nn.Embedding / nn.EmbeddingBag with sparse=True): the batched backward cannot view it"
_REENTRANT = (
    "reentrant checkpointing (torch.utils.checkpoint with use_reentrant=True): its backward calls "
    "torch.autograd.backward itself, which cannot run batched"
)


@dataclass
class Walk:
    """``leaves``: leaves requiring grad that are not in ``exclude``; ``met``: ids of the excluded leaves
    reached; ``hard``: why a batched backward certainly fails here (sparse gradients, reentrant
    checkpointing); ``soft``: a custom ``autograd.Function`` not declared vmap-able (``generate_vmap_rule``
    or a ``vmap`` staticmethod), whose backward may or may not batch."""

    leaves: list[Tensor] = field(default_factory=list)
    met: set[int] = field(default_factory=set)
    hard: str | None = None
    soft: str | None = None


def walk(roots: list[Tensor], stop: Any = None, exclude: set[int] | frozenset[int] = frozenset()) -> Walk:
    """Walk the graph of ``roots`` without passing through the node ``stop``."""
    out = Walk()
    seen: set[Any] = set()
    found: set[int] = set()
    stack = [r.grad_fn for r in roots]
    while stack:
        fn = stack.pop()
        if fn is None or fn is stop or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None:
            if id(var) in exclude:
                out.met.add(id(var))
            elif id(var) not in found:
                found.add(id(var))
                out.leaves.append(var)
            continue
        if out.hard is None:
            _classify(fn, out)
        stack.extend(f for f, _ in fn.next_functions)
    return out


def _classify(fn: Any, out: Walk) -> None:
    if getattr(fn, "_saved_sparse", False) is True:
        out.hard = _SPARSE
    elif isinstance(fn, torch.autograd.function.BackwardCFunction):
        if type(fn).__name__ == "CheckpointFunctionBackward":
            out.hard = _REENTRANT
            return
        cls = getattr(fn, "_forward_cls", None)
        declared = cls is not None and (
            getattr(cls, "generate_vmap_rule", False) or cls.vmap is not torch.autograd.Function.vmap
        )
        if out.soft is None and not declared:
            out.soft = (
                f"the custom autograd.Function {getattr(cls, '__qualname__', type(fn).__name__)}, whose "
                "backward is not declared vmap-able (generate_vmap_rule = True or a vmap staticmethod)"
            )
