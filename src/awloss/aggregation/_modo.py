"""MoDo: one projected-gradient step per call on MGDA's weights, with a two-batch (cross) Gramian."""

from __future__ import annotations

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._base import Aggregator
from ._precision import in_range
from ._solvers import gramian, project_simplex

__all__ = ["MoDo", "CrossBatchAggregator", "project_present"]


def project_present(v: Tensor, present: Tensor) -> Tensor:
    """Project ``v`` onto the simplex of the ``present`` entries (the others get 0); all 0 if none is present."""
    top = torch.where(present, v, torch.full_like(v, float("-inf"))).amax()
    low = torch.where(present.any(), top - 2.0, torch.zeros_like(top))  # <= θ - 1: clamped to 0, θ unchanged
    return torch.where(present, project_simplex(torch.where(present, v, low)), torch.zeros_like(v))


class CrossBatchAggregator(Aggregator):
    """Base of the two-batch methods (MoDo, SDMGrad): ``J`` paired with a second batch, weights from ``J₁J₂ᵀ``.

    The second batch is the previous call's Jacobian (``second_batch="previous"``, kept in the ``previous``
    buffer; the current one on the first call) or the current one (``"same"``). Subclasses implement
    ``cross_weights(matrix, present)``.
    """

    previous: Tensor  # buffer (registered in _init_second_batch): the previous call's Jacobian

    def _init_second_batch(self, second_batch: str) -> None:
        if second_batch not in ("previous", "same"):
            raise ValueError(f"Parameter `second_batch` must be 'previous' or 'same', got {second_batch!r}.")
        self.second_batch = second_batch
        self.register_buffer("previous", torch.zeros(0, 0))

    def cross_weights(self, matrix: Tensor, present: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, jacobian: Tensor) -> Tensor:
        J = jacobian.detach()
        other = self.previous.to(J.dtype) if self.second_batch == "previous" and self.previous.shape == J.shape else J
        # a float32 product squares the gradients (1e20: inf): float64 where it leaves float32's range
        A = in_range(J, lambda: J @ other.T, lambda: gramian(J, other), lambda A: torch.isfinite(A).all())
        if self.check:  # a NaN/inf row is reported after the call; keep it out of the weights' state
            A = torch.where(torch.isfinite(A), A, torch.zeros_like(A))
        present = J.abs().amax(dim=1) > 0  # an all-zero row (absent task) is left out
        w = self.cross_weights(A, present).to(J.dtype)
        if self.second_batch == "previous":
            self.previous = J.clone()
        self._set_weights(w)
        return w @ jacobian


@register
class MoDo(CrossBatchAggregator):
    r"""MoDo (multi-objective gradient with double sampling): stochastic MGDA weights without bias.

    MGDA's weights solved on one mini-batch are biased. MoDo moves them by one projected step per call
    along :math:`-(J_1J_2^\top + \rho I)\lambda`, where :math:`J_1, J_2` come from two *independent*
    batches, an unbiased estimate of the gradient of :math:`\tfrac12\|J^\top\lambda\|^2` (stateful).

    .. math::
        \lambda \leftarrow \Pi_\Delta\!\big(\lambda - \gamma\,(J_t J_{s}^\top + \rho I)\lambda\big),
        \qquad d = \sum_i \lambda_i g_i

    where:
        - :math:`J_t` is the current Jacobian and :math:`J_s` the second batch: the previous call's
          Jacobian (``second_batch="previous"``, default; the current one on the first call) or the
          current one (``"same"``, biased); :meth:`cross_weights` takes :math:`J_1J_2^\top` itself;
        - :math:`\Pi_\Delta` is the Euclidean projection onto the simplex; :math:`\lambda` starts at
          :math:`1/T`; a task whose gradient is exactly 0 (absent) is left out: weight 0, the simplex and
          the initial :math:`1/T` count the present tasks only.

    Args:
        gamma: step of the weight update, ``> 0``; default ``0.1`` (TorchJD's).
        rho: :math:`\ell_2` regularisation, ``>= 0``; default ``0.1`` (TorchJD's).
        second_batch: ``"previous"`` or ``"same"`` (see above).

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("modo", second_batch="same")
        >>> _ = agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        >>> agg.weights
        tensor([0.5750, 0.4250])

    References:
        Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective Learning: Optimization,
        Generalization and Conflict-Avoidance", NeurIPS 2023 / JMLR 2024, https://arxiv.org/abs/2305.20057
        (Eq. 2.9).

    Note:
        The paper draws two (or three) fresh batches per step; ``awloss.backward`` sees one. Our default
        pairs the current batch with the previous step's Jacobian (kept in a ``T x n`` buffer): an
        independent draw, one optimizer step stale. For the paper's scheme call ``cross_weights(J1 @ J2.T)``
        yourself, as with TorchJD's ``MoDoWeighting`` (which takes that matrix) and LibMTL's MoDo trainer.
    """

    name = "modo"
    stateful = True
    state_per_column = True  # a T x n buffer: awloss.backward refuses representation= (columns = samples there)
    lambd: Tensor  # buffer (registered in __init__)

    def __init__(self, gamma: float = 0.1, rho: float = 0.1, second_batch: str = "previous") -> None:
        super().__init__()
        self.gamma = check_positive("gamma", gamma)
        self.rho = check_positive("rho", rho, strict=False)
        self.register_buffer("lambd", torch.zeros(0))
        self._init_second_batch(second_batch)

    def reset_parameters(self) -> None:
        dev = self.lambd.device
        self.lambd, self.previous = torch.zeros(0, device=dev), torch.zeros(0, 0, device=dev)

    def cross_weights(self, matrix: Tensor, present: Tensor | None = None) -> Tensor:
        """One weight update from ``matrix = J₁J₂ᵀ`` (``T x T``, two independent batches); returns λ.

        ``present`` (bools, default all) leaves tasks out: their weight is 0 and λ is a simplex on the others.
        """
        T = matrix.shape[0]
        present = torch.ones(T, dtype=torch.bool, device=matrix.device) if present is None else present
        if self.lambd.shape != (T,):
            self.lambd = present.to(matrix.dtype) / present.sum().clamp_min(1).to(matrix.dtype)
        lam = self.lambd.to(matrix.dtype)
        lam = project_present(lam - self.gamma * (matrix @ lam + self.rho * lam), present)
        self.lambd = lam.detach()
        return lam

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, rho={self.rho}, second_batch={self.second_batch!r}"
