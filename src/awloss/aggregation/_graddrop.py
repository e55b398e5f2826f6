"""GradDrop: keep, per coordinate, the gradients of one randomly chosen sign."""

from __future__ import annotations

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._base import Aggregator

__all__ = ["GradDrop"]


@register
class GradDrop(Aggregator):
    r"""Gradient sign dropout.

    Per coordinate, the positive-sign purity :math:`P` of the task gradients sets the probability of
    keeping only the positive (else only the negative) components; the kept components are summed.
    The choice is made coordinate by coordinate, so the update is not a combination of the rows
    (``weighted = False``; :func:`awloss.backward` returns ``None`` for it). Apply it to gradients with
    respect to a shared representation (``awloss.backward(..., representation=features)``), as the paper does.

    .. math::
        P = \tfrac12\Big(1 + \frac{\sum_i g_i}{\sum_i |g_i|}\Big),\quad
        M_i = \mathbb{1}[P > U]\,\mathbb{1}[g_i > 0] + \mathbb{1}[P < U]\,\mathbb{1}[g_i < 0],\quad
        d = \sum_i (\ell_i + (1 - \ell_i) M_i)\, g_i

    where:
        - :math:`U \sim \mathcal U(0, 1)` is drawn per coordinate; :math:`P = \tfrac12` where all gradients are 0;
        - :math:`\ell_i` is the leak of task :math:`i` (0 by default).

    Args:
        leak: per-task leak in ``[0, 1]`` (a float for all tasks, or a sequence); default ``0.0``.

    Example:
        >>> import torch, awloss
        >>> _ = torch.manual_seed(0)
        >>> awloss.get("graddrop")(torch.tensor([[1.0, 2.0], [1.0, -2.0]]))
        tensor([ 2., -2.])

    References:
        Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign: Optimizing Deep
        Multitask Models with Gradient Sign Dropout", NeurIPS 2020.

    Note:
        Vectorised over tasks (no Python loop); ``U`` is drawn with one ``torch.rand`` call of the
        coordinate count, like TorchJD, so both agree under the same seed.
    """

    name = "graddrop"
    permutation_equivariant = False
    weighted = False
    leak: Tensor  # buffer (registered in __init__)

    def __init__(self, leak: float | list[float] | tuple[float, ...] = 0.0) -> None:
        super().__init__()
        values = [leak] if isinstance(leak, (int, float)) else list(leak)
        for v in values:
            if not 0.0 <= check_positive("leak", v, strict=False) <= 1.0:
                raise ValueError(f"Parameter `leak` must be in [0, 1], got {leak!r}.")
        self.register_buffer("leak", torch.tensor(values, dtype=torch.float32))
        self._no_leak = all(v == 0 for v in values)

    def forward(self, jacobian: Tensor) -> Tensor:
        J = jacobian
        if self.leak.numel() not in (1, J.shape[0]):
            raise ValueError(f"Parameter `leak` has {self.leak.numel()} values for {J.shape[0]} tasks.")
        total, mass = J.sum(dim=0), J.abs().sum(dim=0)
        P = 0.5 * (1.0 + torch.where(mass > 0, total / torch.where(mass > 0, mass, 1.0), 0.0))
        U = torch.rand(P.shape, dtype=J.dtype, device=J.device)
        sign = (P > U).to(J.dtype) - (P < U).to(J.dtype)  # the sign kept per coordinate (0 on a tie)
        kept = torch.relu(J * sign)  # M_i ⊙ g_i = relu(g_i · sign) · sign, without boolean masks
        if self._no_leak:
            return kept.sum(dim=0) * sign
        leak = self.leak.to(J.dtype).reshape(-1, 1)
        return (leak * J).sum(dim=0) + ((1 - leak) * kept).sum(dim=0) * sign
