"""DB-MTL: log-transformed losses and max-norm gradient balancing."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks
from .._inputs import check_positive
from .._registry import register
from ._base import Aggregator
from ._precision import row_norms

__all__ = ["DBMTL"]


@register
class DBMTL(Aggregator):
    r"""Dual-balancing multi-task learning (stateful).

    Loss scales are balanced by taking the log of every loss (:meth:`transform_losses`, applied by
    :func:`awloss.backward`); gradient scales by rescaling an exponential moving average of each task's
    gradient to the largest such norm. The update combines the *averaged* gradients, kept in a ``T x n``
    buffer, so ``.weights`` are the coefficients of that buffer, not of the current Jacobian.

    .. math::
        \hat g_i \leftarrow \beta_t \hat g_i + (1 - \beta_t)\nabla\log(L_i + \epsilon),\quad
        \beta_t = \beta / t^{\sigma},\qquad d = \sum_i \frac{\max_j \|\hat g_j\|}{\|\hat g_i\|}\,\hat g_i

    where:
        - :math:`\hat g_i` starts at 0 and :math:`t` counts the calls from 1; a task whose averaged gradient
          is exactly 0 gets weight 0, and a task whose current gradient is exactly 0 (absent from the batch)
          keeps its average, gets weight 0 and is left out of the max.

    Args:
        beta: EMA factor in ``[0, 1)``; default ``0.9`` (LibMTL's default).
        beta_sigma: decay exponent of :math:`\beta_t`, ``>= 0``; default ``0`` (LibMTL's default).
        eps: added inside the log, ``>= 0``; default ``1e-8``.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("dbmtl", beta=0.0)
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([2., 2.])
        >>> agg.weights
        tensor([2., 1.])

    References:
        Lin, Ye, Xu, Shi & Zhang, "Dual-Balancing for Multi-Task Learning", arXiv:2308.12029 (Neural
        Networks, 2025).

    Note:
        LibMTL returns dummy ones as weights; ours are the real balancing coefficients. LibMTL adds ``1e-8``
        to the norms, which breaks scale invariance for small gradients; we exclude zero norms instead. Used on a
        Jacobian directly, pass the Jacobian of the log-losses (``awloss.backward`` does this for you).
    """

    name = "dbmtl"
    aliases = ("db_mtl",)
    stateful = True
    weighted = False
    state_per_column = True  # grad_ema[T, n]: awloss.backward refuses representation= (columns = samples there)
    grad_ema: Tensor  # buffer (registered in __init__)

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.beta = check_positive("beta", beta, strict=False)
        if self.beta >= 1:
            raise ValueError(f"Parameter `beta` must be in [0, 1), got {beta!r}.")
        self.beta_sigma = check_positive("beta_sigma", beta_sigma, strict=False)
        self.eps = check_positive("eps", eps, strict=False)
        self.register_buffer("grad_ema", torch.zeros(0, 0))
        self._init_step_counter()

    def reset_parameters(self) -> None:
        self.grad_ema = torch.zeros(0, 0, device=self.step.device)
        self._reset_step()

    def transform_losses(self, losses: Tensor) -> Tensor:
        self._check_nonnegative(losses.detach().reshape(-1))
        return torch.log(losses + self.eps)

    def transform_items(self, items: list[Tensor]) -> list[Tensor]:
        self._check_nonnegative(torch.stack([x.detach() for x in items]))
        return [torch.log(x + self.eps) for x in items]

    def _check_nonnegative(self, values: Tensor) -> None:
        mode = _checks.check_mode(self)
        if mode is not None:  # a device flag, read at the next call (or now: check="immediate")
            _checks.push(self, (values >= 0).all(), lambda m: _report_negative(values), mode)

    def forward(self, jacobian: Tensor) -> Tensor:
        J = jacobian
        if self.grad_ema.shape != J.shape:
            self.grad_ema = torch.zeros_like(J)
        beta_t = self.beta / self._advance_step() ** self.beta_sigma
        ema = self.grad_ema if self.grad_ema.dtype == J.dtype else self.grad_ema.to(J.dtype)
        present = (J != 0).any(dim=1)  # a zero row (absent task): its average is kept, its weight is 0
        ema = torch.where(present[:, None], ema * beta_t + J.detach() * (1 - beta_t), ema)
        self.grad_ema = ema
        # a float32 norm squares its entries (1e20 gradients: inf, then inf/inf = NaN): row_norms redoes those
        norms = torch.where(present, row_norms(ema, present), 0.0)
        alpha = torch.where(norms > 0, norms.max() / torch.where(norms > 0, norms, 1.0), 0.0)
        self._weights = alpha.detach()
        return alpha @ ema

    @property
    def weights(self) -> Tensor:
        """Detached ``Tensor[T]``: the coefficients of the averaged gradients of the last call."""
        if self._weights is None:
            raise RuntimeError("DBMTL.weights is known only after the first call.")
        return self._weights


def _report_negative(values: Tensor) -> None:
    raise ValueError(f"DB-MTL takes the log of the losses: they must be >= 0, got {values.tolist()}.")
