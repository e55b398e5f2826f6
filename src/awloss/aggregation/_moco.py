"""MoCo: tracked (momentum-averaged) task gradients and a projected-gradient update of the task weights."""

from __future__ import annotations

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._base import Aggregator
from ._modo import project_present
from ._precision import in_range, row_norms
from ._solvers import gramian, work_dtype

__all__ = ["MoCo"]


@register
class MoCo(Aggregator):
    r"""MoCo: MGDA on tracked gradients, with weights that move by one projected-gradient step per call.

    MGDA's weights computed from one mini-batch are biased. MoCo keeps a running estimate :math:`y_i` of
    each task gradient (stochastic approximation with step :math:`\beta_t`) and moves the weights by one
    step of projected gradient descent on :math:`\tfrac12\|Y^\top\lambda\|^2` (step :math:`\gamma_t`),
    which makes the direction's bias vanish over iterations (stateful).

    .. math::
        y_i \leftarrow y_i - \beta_t\,(y_i - h_i),\quad
        \lambda \leftarrow \Pi_\Delta\!\big(\lambda - \gamma_t\,(YY^\top + \rho I)\lambda\big),
        \qquad d = Y^\top\lambda

    where:
        - :math:`h_i = g_i` (``normalize="none"``), :math:`g_i/(\|g_i\| + 10^{-8})` (``"unit"``) or
          :math:`L_i\,g_i/(\|g_i\| + 10^{-8})` (``"loss"``, LibMTL; the losses are read by
          :func:`awloss.backward` through :meth:`transform_items`);
        - :math:`\beta_t = \beta/t^{\sigma_\beta}`, :math:`\gamma_t = \gamma/t^{\sigma_\gamma}`, :math:`t`
          counting calls from 1; :math:`y` starts at 0 and :math:`\lambda` at :math:`1/T`;
        - :math:`\Pi_\Delta` is the Euclidean projection onto the simplex (``simplex="project"``, the paper)
          or :math:`\operatorname{softmax}` (``"softmax"``, LibMTL);
        - a task whose gradient is exactly 0 (absent) is left out of :math:`\lambda`'s simplex (weight 0;
          the initial :math:`1/T` counts the present tasks); its :math:`y_i` decays toward 0;
        - the update combines the tracked gradients, so ``.weights`` (:math:`\lambda`) are the coefficients
          of :math:`Y`, not of the current Jacobian (``weighted = False``).

    Args:
        beta: :math:`\beta \in (0, 1]`; default ``0.5`` (LibMTL).
        beta_sigma: decay exponent of :math:`\beta_t`, ``>= 0``; default ``0.5`` (LibMTL).
        gamma: :math:`\gamma > 0`; default ``0.1`` (LibMTL).
        gamma_sigma: decay exponent of :math:`\gamma_t`, ``>= 0``; default ``0.5`` (LibMTL).
        rho: :math:`\ell_2` regularisation :math:`\rho \ge 0`; default ``0.0`` (LibMTL).
        normalize: ``"none"`` (default, the paper), ``"unit"`` or ``"loss"`` (LibMTL's).
        simplex: ``"project"`` (default, the paper) or ``"softmax"`` (LibMTL's).

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("moco")
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([0.2594, 0.4812])
        >>> agg.weights
        tensor([0.5188, 0.4812])

    References:
        Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in Multi-objective
        Learning: A Provably Convergent Approach", ICLR 2023, https://openreview.net/forum?id=dLAYGdKTi2
        (Algorithm 1, Eqs. 3.3-3.4).

    Note:
        LibMTL (from the authors' code) scales each gradient to the task's loss value and replaces the
        simplex projection by a softmax of the stepped weights; ``normalize="loss", simplex="softmax"``
        reproduces it, the defaults follow the paper. The paper also projects :math:`y` onto a bounded set,
        which LibMTL and we omit. :math:`Y` is a ``T x n`` buffer.
    """

    name = "moco"
    stateful = True
    state_per_column = True  # a T x n buffer: awloss.backward refuses representation= (columns = samples there)
    weighted = False
    tracked: Tensor  # buffers (registered in __init__)
    lambd: Tensor

    def __init__(self, beta: float = 0.5, beta_sigma: float = 0.5, gamma: float = 0.1, gamma_sigma: float = 0.5,
                 rho: float = 0.0, normalize: str = "none", simplex: str = "project") -> None:
        super().__init__()
        self.beta = check_positive("beta", beta)
        if self.beta > 1:
            raise ValueError(f"Parameter `beta` must be in (0, 1], got {beta!r}.")
        self.beta_sigma = check_positive("beta_sigma", beta_sigma, strict=False)
        self.gamma = check_positive("gamma", gamma)
        self.gamma_sigma = check_positive("gamma_sigma", gamma_sigma, strict=False)
        self.rho = check_positive("rho", rho, strict=False)
        if normalize not in ("none", "unit", "loss"):
            raise ValueError(f"Parameter `normalize` must be 'none', 'unit' or 'loss', got {normalize!r}.")
        if simplex not in ("project", "softmax"):
            raise ValueError(f"Parameter `simplex` must be 'project' or 'softmax', got {simplex!r}.")
        self.normalize, self.simplex = normalize, simplex
        self.register_buffer("tracked", torch.zeros(0, 0))
        self.register_buffer("lambd", torch.zeros(0))
        self._losses: Tensor | None = None
        self._init_step_counter()

    def reset_parameters(self) -> None:
        self.tracked = torch.zeros(0, 0, device=self.step.device)
        self.lambd = torch.zeros(0, device=self.step.device)
        self._losses = None
        self._reset_step()

    def transform_items(self, items: list[Tensor]) -> list[Tensor]:
        if self.normalize == "loss":  # remember the loss values for the next call (awloss.backward)
            self._losses = torch.stack([x.detach().reshape(()) for x in items])
        return items

    def transform_losses(self, losses: Tensor) -> Tensor:
        if self.normalize == "loss":
            self._losses = losses.detach().reshape(-1)
        return losses

    def forward(self, jacobian: Tensor) -> Tensor:
        T = jacobian.shape[0]
        h = jacobian.detach()
        if self.check:  # a NaN/inf row is reported after the call; keep it out of the tracked gradients
            h = torch.where(torch.isfinite(h), h, torch.zeros_like(h))
        present = h.abs().amax(dim=1) > 0  # an all-zero row (absent task) is left out of λ's simplex
        if self.normalize != "none":
            h = h / (row_norms(h, present)[:, None] + 1e-8)
        if self.normalize == "loss":
            if self._losses is None or self._losses.numel() != T:
                raise ValueError(
                    "MoCo(normalize='loss') needs the losses: call it through awloss.backward, or call "
                    "`agg.transform_losses(losses)` before `agg(jacobian)`."
                )
            h = h * self._losses.to(h.dtype)[:, None]
            self._losses = None
        if self.tracked.shape != h.shape:
            self.tracked = torch.zeros_like(h)
            self.lambd = present.to(h.dtype) / present.sum().clamp_min(1).to(h.dtype)
            self._reset_step()
        t = self._advance_step()
        y = self.tracked.to(h.dtype)
        y = y - (self.beta / t**self.beta_sigma) * (y - h)
        lam = self.lambd.to(h.dtype)
        # y yᵀλ squares y (1e20 gradients: inf in float32): through y's float64 Gramian where it leaves float32
        q = in_range(y, lambda: y @ (y.T @ lam), lambda: gramian(y) @ lam.to(work_dtype(y)),
                     lambda q: torch.isfinite(q).all())
        lam = lam.to(q.dtype)
        step = lam - (self.gamma / t**self.gamma_sigma) * (q + self.rho * lam)
        if self.simplex == "project":
            lam = project_present(step, present)
        else:
            lam = torch.softmax(torch.where(present, step, torch.full_like(step, float("-inf"))), dim=0)
            lam = torch.where(present, lam, torch.zeros_like(lam)).nan_to_num(0.0)
        lam = lam.to(h.dtype)
        self.tracked, self.lambd = y, lam
        self._weights = lam.detach()
        update: Tensor = lam @ y
        return update

    @property
    def weights(self) -> Tensor:
        """Detached ``Tensor[T]``: the coefficients of the tracked gradients of the last call."""
        if self._weights is None:
            raise RuntimeError("MoCo.weights is known only after the first call.")
        return self._weights

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, rho={self.rho}, normalize={self.normalize!r}"
