"""Jacobian families with a known stationarity structure (our samplers; the definitions follow TorchJD's tests).

A Jacobian ``J[T, n]`` is *strongly stationary* when ``vᵀJ = 0`` for some ``v > 0`` (0 is in the relative
interior of the convex hull of the rows), *weakly stationary* when ``vᵀJ = 0`` for some ``v >= 0, v != 0``
(0 is in the hull), and *strictly weak* when weak but not strong. Each sampler builds ``J = U S Vᵀ`` from an
orthonormal left basis ``U`` chosen to give the structure, positive singular values ``S`` and a random
orthonormal ``V``:

- ``normal``: ``U`` random (generic, not stationary when ``T <= rank``);
- ``strong``: the columns of ``U`` are orthogonal to a positive ``v``, so ``vᵀJ = 0``;
- ``strictly_weak``: ``v, v'`` are non-negative with disjoint supports; ``U`` is orthogonal to ``v`` and
  holds ``v'`` with a positive singular value. Then ``vᵀJ = 0``, and a positive ``w`` with ``wᵀJ = 0``
  would give ``0 = wᵀJJᵀv' = s²wᵀv' > 0``: not strong;
- ``non_weak``: ``U`` holds a positive ``u`` with a positive singular value: any ``v >= 0, v != 0`` has
  ``vᵀJJᵀu = s²vᵀu > 0``, so ``vᵀJ != 0``.
"""

from __future__ import annotations

import torch

F64 = torch.float64


def _orthonormal_completion(Q: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Columns of ``Q`` (orthonormal, ``[m, k]``) followed by a random orthonormal basis of their complement."""
    m, k = Q.shape
    R = torch.randn(m, m - k, generator=g, dtype=F64)
    R = R - Q @ (Q.T @ R)  # project out Q, then orthonormalise (twice for round-off)
    R = R - Q @ (Q.T @ R)
    B, _ = torch.linalg.qr(R)
    return torch.cat([Q, B], dim=1)


def _assemble(U: torch.Tensor, n: int, rank: int, g: torch.Generator) -> torch.Tensor:
    V = _orthonormal_completion(torch.zeros(n, 0, dtype=F64), g)
    s = torch.rand(rank, generator=g, dtype=F64) + 0.5  # singular values in [0.5, 1.5)
    return U[:, :rank] @ torch.diag(s) @ V[:, :rank].T


def _unit(v: torch.Tensor) -> torch.Tensor:
    return (v / v.norm()).unsqueeze(1)


def sample(kind: str, T: int, n: int, rank: int, seed: int) -> torch.Tensor:
    """A float64 ``J[T, n]`` of the given ``rank`` and structure (``kind`` as in the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        U = _orthonormal_completion(torch.zeros(T, 0, dtype=F64), g)
        return _assemble(U, n, rank, g)
    if kind == "non_weak":
        u = torch.rand(T, generator=g, dtype=F64) + 0.1
        return _assemble(_orthonormal_completion(_unit(u), g), n, rank, g)
    if kind == "strong":
        assert 1 <= rank <= min(T - 1, n)
        v = torch.rand(T, generator=g, dtype=F64) + 0.1
        return _assemble(_orthonormal_completion(_unit(v), g)[:, 1:], n, rank, g)
    if kind == "strictly_weak":
        assert 1 <= rank <= min(T - 1, n) and T >= 2
        perm = torch.randperm(T, generator=g)
        split = int(torch.randint(1, T, (1,), generator=g))
        v, v2 = torch.zeros(T, dtype=F64), torch.zeros(T, dtype=F64)
        v[perm[:split]] = torch.rand(split, generator=g, dtype=F64) + 0.1
        v2[perm[split:]] = torch.rand(T - split, generator=g, dtype=F64) + 0.1
        U = _orthonormal_completion(torch.cat([_unit(v), _unit(v2)], dim=1), g)
        return _assemble(U[:, 1:], n, rank, g)  # v' (column 1) keeps the largest-index singular value slot
    raise ValueError(kind)


# (kind, T, n, rank): TorchJD's shapes for its stationarity families, smaller (the default suite stays fast)
STATIONARITY_SHAPES = [(8, 6, 6), (8, 6, 3), (8, 6, 1), (8, 30, 1), (8, 30, 7), (3, 5, 2), (2, 4, 1)]
NORMAL_SHAPES = [(1, 1, 1), (4, 3, 1), (4, 3, 2), (4, 3, 3), (6, 9, 4), (6, 9, 6)]
SCALES = [1e-10, 1e3, 1e10, 1e15]


def structured(kinds: tuple[str, ...] = ("normal", "strong", "strictly_weak", "non_weak")) -> list[tuple[str, torch.Tensor]]:
    """``(id, J)`` pairs: every kind on its shapes, deterministic (seeded by position)."""
    out = []
    for kind in kinds:
        shapes = NORMAL_SHAPES if kind == "normal" else STATIONARITY_SHAPES
        for i, (T, n, r) in enumerate(shapes):
            out.append((f"{kind}-{T}x{n}r{r}", sample(kind, T, n, r, seed=1000 * len(kind) + i)))
    return out
