"""SDMGrad: stochastic direction-oriented MGDA, weights by a few projected SGD steps on a cross Gramian."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._inputs import check_int, check_positive
from .._registry import register
from ._modo import CrossBatchAggregator, project_present

__all__ = ["SDMGrad"]


@register
class SDMGrad(CrossBatchAggregator):
    r"""SDMGrad: the MGDA direction pulled toward a preferred one, with two-batch stochastic weights.

    SDMGrad minimises :math:`\tfrac12\|J^\top(w + \lambda\tilde w)\|^2` over the simplex with a few steps
    of projected SGD with momentum, where the matrix is estimated from two independent batches; the
    update combines the gradients with :math:`(w + \lambda\tilde w)/(1+\lambda)`: :math:`\lambda = 0` is
    (stochastic) MGDA, :math:`\lambda \to \infty` the preferred direction (the mean by default). The
    weights :math:`w` are warm-started from the previous call (stateful).

    .. math::
        A = \frac{J_t J_s^\top}{(\operatorname{mean}_i \sqrt{(J_tJ_s^\top)_{ii}})^2 + 10^{-8}},\quad
        v \leftarrow \mu v + A(w + \lambda\tilde w),\ w \leftarrow \Pi_\Delta(w - \eta v),\qquad
        d = \sum_i \frac{w_i + \lambda\tilde w_i}{1 + \lambda} g_i

    where:
        - :math:`J_s` is the second batch: the previous call's Jacobian (``second_batch="previous"``,
          default; the current one on the first call) or the current one (``"same"``);
          :meth:`cross_weights` takes :math:`J_1J_2^\top` itself;
        - ``n_iter`` steps per call, :math:`v` restarts at 0; :math:`w` starts at :math:`1/T`;
        - a task whose gradient is exactly 0 (absent) is left out: weight 0, and the simplex, the default
          preference and the normalisation count the present tasks only.

    Args:
        lr: :math:`\eta > 0`, step of the inner SGD; default ``10.0``.
        momentum: :math:`\mu \in [0, 1)`; default ``0.5``.
        n_iter: inner steps per call, ``>= 1``; default ``20``.
        lambda_: pull toward the preference, ``>= 0``; default ``0.3`` (the paper's experiments, LibMTL,
            TorchJD; the official class default is 0.6).
        pref_vector: :math:`\tilde w`, one value per task; default ``None``: :math:`1/T`.
        second_batch: ``"previous"`` or ``"same"`` (see above).

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("sdmgrad", second_batch="same")
        >>> _ = agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        >>> agg.weights
        tensor([0.1417, 0.8583])

    References:
        Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
        Algorithms", NeurIPS 2023, https://arxiv.org/abs/2305.18409 (Algorithm 1).

    Note:
        The paper draws two independent batches per step (for the matrix) besides the one for the update;
        ``awloss.backward`` sees one. Our default pairs the current batch with the previous step's Jacobian
        (a ``T x n`` buffer): independent, one optimizer step stale. For the paper's scheme call
        ``cross_weights(J1 @ J2.T)`` yourself, as with TorchJD's ``SDMGradWeighting`` (which takes that
        matrix); the inner solver is the same (TorchJD's and LibMTL's normalisation and defaults).
    """

    name = "sdmgrad"
    stateful = True
    state_per_column = True  # a T x n buffer: awloss.backward refuses representation= (columns = samples there)
    pref_vector: Tensor  # buffers (registered in __init__)
    w: Tensor

    def __init__(self, lr: float = 10.0, momentum: float = 0.5, n_iter: int = 20, lambda_: float = 0.3,
                 pref_vector: Sequence[float] | Tensor | None = None, second_batch: str = "previous") -> None:
        super().__init__()
        self.lr = check_positive("lr", lr)
        self.momentum = check_positive("momentum", momentum, strict=False)
        if self.momentum >= 1:
            raise ValueError(f"Parameter `momentum` must be in [0, 1), got {momentum!r}.")
        self.n_iter = check_int("n_iter", n_iter)
        self.lambda_ = check_positive("lambda_", lambda_, strict=False)
        pref = None if pref_vector is None else torch.as_tensor(pref_vector, dtype=torch.float64).reshape(-1)
        if pref is not None and not bool(torch.isfinite(pref).all()):
            raise ValueError(f"Parameter `pref_vector` must be finite, got {pref_vector!r}.")
        self.register_buffer("pref_vector", pref)
        self.register_buffer("w", torch.zeros(0))
        self._init_second_batch(second_batch)

    def reset_parameters(self) -> None:
        dev = self.w.device
        self.w, self.previous = torch.zeros(0, device=dev), torch.zeros(0, 0, device=dev)

    def cross_weights(self, matrix: Tensor, present: Tensor | None = None) -> Tensor:
        """One weight update from ``matrix = J₁J₂ᵀ`` (``T x T``, two independent batches); returns the weights.

        ``present`` (bools, default all) leaves tasks out: weight 0, and the simplex, the default preference
        and the normalisation count the present tasks only.
        """
        T = matrix.shape[0]
        if self.pref_vector is not None and self.pref_vector.numel() != T:
            raise ValueError(f"Parameter `pref_vector` has {self.pref_vector.numel()} values, the Jacobian {T} rows.")
        present = torch.ones(T, dtype=torch.bool, device=matrix.device) if present is None else present
        pf = present.to(matrix.dtype)
        m = pf.sum().clamp_min(1.0)
        pref = pf / m if self.pref_vector is None else self.pref_vector.to(matrix.dtype) * pf
        if self.w.shape != (T,):
            self.w = pf / m
        scale = (matrix.diagonal().clamp_min(0.0).sqrt() * pf).sum() / m
        A = matrix / (scale.square() + 1e-8)
        w = self.w.to(matrix.dtype)
        v = torch.zeros_like(w)
        for _ in range(self.n_iter):
            v = self.momentum * v + A @ (w + self.lambda_ * pref)
            w = project_present(w - self.lr * v, present)
        self.w = w.detach()
        return (w + self.lambda_ * pref) / (1.0 + self.lambda_)

    def extra_repr(self) -> str:
        return f"lr={self.lr}, momentum={self.momentum}, n_iter={self.n_iter}, lambda_={self.lambda_}"
