"""float32 first, float64 where float32's range is left: products and norms of gradients.

Squares leave float32's range long before the gradients do: float32 holds gradients from about 1e-38 to
3e38, their squares only from about 1e-19 to 1e19. A squared norm of a 1e-25 gradient underflows to 0 (the
task then looks absent), one of a 1e20 gradient overflows. The fast float32 result is kept where it is in
range and the float64 one taken otherwise: on the CPU, where a host read is free, one read chooses (float64
runs only when needed); elsewhere both run and the device selects (no host read in a step), so every device
gives the same values. (:func:`awloss.backward`'s Gramian on accelerators is float64 outright instead.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import host_reads_are_free
from ._solvers import work_dtype

#: per column: a squared norm of at least ``n·2⁻¹⁰⁰`` has its underflowed (subnormal) products below
#: ``2⁻²⁶`` of it (a float32 subnormal is below ``2⁻¹²⁶``), and its cross products the same by Cauchy-Schwarz
UNDERFLOW = 2.0**-100


def in_range(like: Tensor, fast: Callable[[], Tensor], exact: Callable[[], Tensor],
             fits: Callable[[Tensor], Tensor]) -> Tensor:
    """``fast()`` (the float32 computation) converted to ``exact()``'s dtype where ``fits`` (a 0-dim bool tensor)
    says it is in range, else ``exact()`` (in :func:`~._solvers.work_dtype`): the same values on every device.
    On the CPU one host read chooses, so ``exact`` runs only when needed; elsewhere both run and the device
    selects (no host read). ``like`` float64: ``fast()`` is exact already."""
    if like.dtype == torch.float64:
        return fast()
    out = fast()
    ok = fits(out)
    if host_reads_are_free(like):
        return out.to(work_dtype(like)) if bool(ok) else exact()
    return torch.where(ok, out.to(work_dtype(like)), exact())


def low(G: Tensor, n: int) -> Tensor:
    """``Tensor[T]`` of bool: the squared norms ``diag(G)`` too small for float32 (0 included)."""
    return G.diagonal() < n * UNDERFLOW


def gramian_fits(G: Tensor, n: int, nonzero: Callable[[int], bool]) -> bool:
    """Whether ``G`` (a float32 Gramian of ``n`` columns; read on the host) is finite and every squared norm is
    in float32's safe range or 0 for a row that is zero (``nonzero(t)``: row ``t`` of ``J`` has a non-zero
    entry; asked only of the rows whose ``G_tt`` is low)."""
    if G.dtype == torch.float64:
        return True
    T = G.shape[0]
    flags = torch.cat([torch.isfinite(G).all().reshape(1), low(G, n), G.diagonal() == 0]).tolist()
    return bool(flags[0]) and all(flags[1 + T + t] and not nonzero(t) for t in range(T) if flags[1 + t])


def row_norms(x: Tensor, present: Tensor) -> Tensor:
    """``‖x_t‖`` of each row ``[T, n]`` in ``x``'s dtype, over its whole range (``present``: the rows that may be
    non-zero; a low norm elsewhere is a zero row)."""
    floor = math.sqrt(x.shape[1] * UNDERFLOW)
    return in_range(x, lambda: torch.linalg.vector_norm(x, dim=1),
                    lambda: torch.linalg.vector_norm(x, dim=1, dtype=work_dtype(x)),
                    lambda norms: torch.isfinite(norms).all() & ~((norms < floor) & present).any()).to(x.dtype)
