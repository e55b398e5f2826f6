"""The uses of a shared parameter that the gramian engine reads from the autograd graph.

A *use* is one autograd node that consumes the parameter; from the gradient ``Δ`` of that node's output it
gives the parameter's gradient through it (``grad``: ``Δ[K, *out] -> [K, *p.shape]``, ``K`` stacked
cotangents) using only what the node saved for its own backward (the layer's input, a norm's statistics).
Linear-like uses (``nn.Linear``, the projections of ``nn.MultiheadAttention``, ``x @ W``) also give
``rows``: ``A[N, d_in]`` and a factor ``α`` with ``grad = α Δᵀ A`` (``Aᵀ Δ`` for ``x @ W``), the form in which
the Gramian needs no weight gradient at all. Nodes: ``AddmmBackward0``/``MmBackward0`` (through the
weight's ``TBackward0``), ``AddBackward0`` (a broadcast bias), ``ConvolutionBackward0``,
``EmbeddingBackward0``, ``NativeLayerNormBackward0``, ``NativeBatchNormBackward0``, ``NativeGroupNormBackward0``.
Any other consumer (an LSTM, a custom op, a view of the parameter) makes :func:`use_of` return ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor


@dataclass
class Use:
    node: Any  # the autograd node whose output gradient the use needs
    grad: Callable[[Tensor], Tensor]  # Δ[K, *out] -> the parameter's gradient [K, *p.shape] through this use
    rows: Tensor | None = None  # Linear-like: A[N, d_in] with grad = alpha · Δᵀ A (transposed: alpha · Aᵀ Δ)
    alpha: float = 1.0
    transposed: bool = False
    block: Callable[[Tensor], Tensor] | None = None  # a smaller [K, m] with the same Gramian as grad (embeddings)


def sum_to(d: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``d[K, *out]`` summed to ``[K, *shape]`` (the reverse of broadcasting ``shape`` to ``out``)."""
    lead = d.dim() - 1 - len(shape)
    if lead:
        d = d.sum(dim=tuple(range(1, 1 + lead)))
    dims = tuple(i + 1 for i, s in enumerate(shape) if s == 1 and d.shape[i + 1] != 1)
    return d.sum(dim=dims, keepdim=True) if dims else d


def _linear(node: Any, p: Tensor, a: Tensor, alpha: float, transposed: bool) -> Use:
    a = a.reshape(-1, a.shape[-1])

    def grad(d: Tensor) -> Tensor:
        d = d.reshape(d.shape[0], a.shape[0], -1)
        x = a.to(d.dtype)
        if d.shape[0] == 1:  # the update (one cotangent): a 2-D product, twice as fast as a batch of one on the CPU
            g = (x.T @ d[0] if transposed else d[0].T @ x)[None]
        else:
            g = torch.einsum("kni,knj->kij", x.expand(d.shape[0], *a.shape), d) if transposed else torch.matmul(
                d.transpose(1, 2), x
            )
        return (g * alpha if alpha != 1 else g).reshape(d.shape[0], *p.shape)

    return Use(node, grad, a, alpha, transposed)


def _channels(d: Tensor, x: Tensor | None, keep: int, shape: tuple[int, ...]) -> Tensor:
    """``Σ Δ ⊙ x̂`` (or ``Σ Δ``) over every axis of ``d[K, *out]`` but the parameter's ``keep`` trailing ones
    starting at output axis ``1`` (channels first: BatchNorm, GroupNorm) or the last ones (LayerNorm)."""
    prod = d if x is None else d * x
    return sum_to(prod, shape) if keep < 0 else prod.sum(dim=(1, *range(3, prod.dim()))).reshape(d.shape[0], *shape)


def _norm(node: Any, slot: int, p: Tensor) -> Use | None:
    name = type(node).__name__
    x = node._saved_input  # the saved tensors are read now (freed ones make this use unknown) ...
    if name == "NativeLayerNormBackward0":
        mean, inv, keep = node._saved_result1, node._saved_result2, -1
    elif name == "NativeBatchNormBackward0":
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if node._saved_training:
            mean, inv = node._saved_result1.view(shape), node._saved_result2.view(shape)
        else:
            mean = node._saved_running_mean.view(shape)
            inv = (node._saved_running_var + node._saved_eps).rsqrt().view(shape)
        keep = 1
    else:  # NativeGroupNormBackward0
        N, G = node._saved_N, node._saved_group
        mean, inv, keep = node._saved_result1.unsqueeze(-1), node._saved_result2.unsqueeze(-1), 1
    shape = tuple(p.shape)
    if slot == 2:
        return Use(node, lambda d: _channels(d, None, keep, shape))

    memo: list[Tensor] = []

    def grad(d: Tensor) -> Tensor:  # ... x̂ once, when a gradient is asked for (not by a plan that is dropped)
        if not memo:
            grouped = name == "NativeGroupNormBackward0"
            memo.append(((x.reshape(N, G, -1) - mean) * inv).reshape(x.shape) if grouped else (x - mean) * inv)
        return _channels(d, memo[0].to(d.dtype), keep, shape)

    return Use(node, grad)


def _embedding(node: Any, p: Tensor) -> Use | None:
    if node._saved_sparse or node._saved_scale_grad_by_freq:
        return None
    idx = node._saved_indices.reshape(-1)
    pad = node._saved_padding_idx
    keep = None if not 0 <= pad < p.shape[0] else (idx != pad)

    def grad(d: Tensor) -> Tensor:
        d = d.reshape(d.shape[0], idx.numel(), -1)
        if keep is not None:
            d = d * keep.to(d.dtype)[None, :, None]
        return d.new_zeros(d.shape[0], *p.shape).index_add_(1, idx, d)

    def block(d: Tensor) -> Tensor:  # only the rows the batch touched, [K, ≤ N, dim]: the same Gramian
        d = d.reshape(d.shape[0], idx.numel(), -1)
        if keep is not None:
            d = d * keep.to(d.dtype)[None, :, None]
        return d.new_zeros(d.shape[0], idx.numel(), d.shape[2]).index_add_(1, _groups(idx), d)

    return Use(node, grad, block=block)


def _groups(idx: Tensor) -> Tensor:
    """For each entry of ``idx``, the rank of its value among the distinct values (``torch.unique``'s inverse
    without its host synchronisation: the number of distinct values is never read; rows beyond it stay 0)."""
    s, order = torch.sort(idx)
    rank = torch.zeros_like(idx)
    if idx.numel() > 1:
        rank[1:] = torch.cumsum(s[1:] != s[:-1], 0)
    return torch.empty_like(idx).scatter_(0, order, rank)


def _conv(node: Any, slot: int, p: Tensor) -> Use | None:
    if slot == 2:
        return Use(node, lambda d: d.sum(dim=(1, *range(3, d.dim()))))
    x, w = node._saved_input, node._saved_weight
    args = (node._saved_stride, node._saved_padding, node._saved_dilation, node._saved_transposed,
            node._saved_output_padding, node._saved_groups)

    def grad(d: Tensor) -> Tensor:
        xd, wd = x.to(d.dtype), w.to(d.dtype)  # (autocast: Δ may come wider than the saved half tensors)
        out = [torch.ops.aten.convolution_backward(dk, xd, wd, None, *args, [False, True, False])[1] for dk in d]
        return torch.stack(out)

    return Use(node, grad)


def use_of(node: Any, slot: int, p: Tensor, consumers: dict[Any, list[tuple[Any, int]]]) -> Use | None:
    """The use of ``p`` by ``node`` (``p`` is its input number ``slot``), ``None`` if not understood."""
    name = type(node).__name__
    try:
        if name == "TBackward0" and p.dim() == 2 and len(consumers.get(node, ())) == 1:
            (mm, s), = consumers[node]
            kind = type(mm).__name__
            if kind == "AddmmBackward0" and s == 2:
                return _linear(mm, p, mm._saved_mat1, float(mm._saved_alpha), False)
            if kind == "MmBackward0" and s == 1:
                return _linear(mm, p, mm._saved_self, 1.0, False)
            return None
        if name == "AddmmBackward0":
            if slot == 0:
                beta = float(node._saved_beta)
                return Use(node, lambda d: sum_to(d, tuple(p.shape)) * beta)
            return _linear(node, p, node._saved_mat1, float(node._saved_alpha), True) if slot == 2 else None
        if name == "MmBackward0":
            return _linear(node, p, node._saved_self, 1.0, True) if slot == 1 else None
        if name == "AddBackward0":
            alpha = float(node._saved_alpha) if slot == 1 else 1.0
            return Use(node, lambda d: sum_to(d, tuple(p.shape)) * alpha)
        if name == "ConvolutionBackward0":
            return _conv(node, slot, p)
        if name == "EmbeddingBackward0" and slot == 0:
            return _embedding(node, p)
        if name in ("NativeLayerNormBackward0", "NativeBatchNormBackward0", "NativeGroupNormBackward0") and slot:
            return _norm(node, slot, p)
    except (AttributeError, RuntimeError):  # a saved tensor freed or not saved: the fallback
        return None
    return None
