"""PCD: follow the primary task's gradient, guaranteeing each secondary task a share of progress."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._base import GramianAggregator
from ._solvers import nnqp, work_dtype

__all__ = ["PCD"]

_RIDGE = 1e-10  # on the secondaries' Gramian normalised to a unit largest diagonal
_INFEASIBLE = 2.0  # ‖μ(ridge)‖ > this · ‖μ(4·ridge)‖: the multipliers grow as 1/ridge, the dual is unbounded


@register
class PCD(GramianAggregator):
    r"""Priority-constrained descent: the primary gradient, minimally bent so every secondary task progresses.

    Row 0 of the Jacobian is the primary task; PCD stays as close as possible to its (normalised) gradient
    subject to each secondary task receiving at least a fraction :math:`\tau` of the first-order progress
    that its own normalised gradient would give. Gradients are normalised by a bias-corrected running
    average of their squared norms (stateful), so :math:`\tau` is scale free; the result is rescaled to
    the primary gradient's norm.

    .. math::
        \tilde d = \arg\min_d \tfrac12\|d - \tilde g_1\|^2 \ \text{s.t.}\ \tilde g_j^\top d \ge \tau_j
        \|\tilde g_j\|^2\ (j \ge 2), \qquad d = \frac{\|g_1\|}{\|\tilde d\|}\,\tilde d

    where:
        - :math:`\tilde g_i = g_i/\sqrt{\hat v_i + \epsilon}`, :math:`\hat v_i` the EMA of :math:`\|g_i\|^2`
          with decay :math:`\beta`, divided by :math:`1 - \beta^t` (:math:`t` counts the calls);
        - the dual :math:`\tilde d = \tilde g_1 + \sum_j \mu_j \tilde g_j`, :math:`\mu \ge 0`, is a
          non-negative QP on the Gramian; infeasible constraints are dropped (:math:`d = g_1`), and
          :math:`g_1 = 0` or :math:`\tilde d = 0` (to round-off) gives :math:`d = 0`;
        - a secondary task with an all-zero gradient has a void constraint and weight 0.

    Args:
        tau: the guaranteed fraction :math:`\tau \in [0, 1]`, a float or one value per secondary task
            (length ``T - 1``); default ``0.02`` (TorchJD's).
        beta: EMA decay in ``[0, 1)``; default ``0.999``.
        eps: added to :math:`\hat v_i` before the square root, ``>= 0``; default ``1e-8``.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("pcd", tau=0.5)
        >>> agg(torch.tensor([[1.0, 0.0], [-1.0, 1.0]])).round(decimals=4)
        tensor([0.1691, 0.9856])

    References:
        Varam et al., "Not All Objectives Are Born Equal: Priority-Constrained Descent for Hierarchical
        Multi-Objective Optimization", TMLR 2026, https://openreview.net/forum?id=HT01yGHLEt.

    Note:
        TorchJD solves the dual with a Goldfarb-Idnani active set in float64 on the CPU (Python loops and
        host reads) and declares infeasibility when a step is unbounded; we solve the same dual with the
        batched non-negative QP solver on the device, with a ridge of ``1e-10`` (``10·eps`` of a float32 Gramian), and declare infeasibility when
        the multipliers grow as ``1/ridge`` (the dual's unbounded ray: ``‖μ(ρ)‖ > 2‖μ(4ρ)‖``, a second solve). The two agree except on nearly
        infeasible or nearly dependent constraint sets, which each side's tolerances decide differently.
    """

    name = "pcd"
    stateful = True
    permutation_equivariant = False  # row 0 is the primary task
    zero_rows = "kept"  # handled here: a zero primary gives d = 0, a zero secondary a void constraint (weight 0)
    sq_norm_ema: Tensor  # buffer (registered in __init__)

    def __init__(self, tau: float | Tensor = 0.02, beta: float = 0.999, eps: float = 1e-8) -> None:
        super().__init__()
        t = torch.as_tensor(tau, dtype=torch.float64, device="cpu").detach()  # checked on the CPU, even under meta
        if t.dim() > 1 or not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"Parameter `tau` must be a float or a 1-D vector of values in [0, 1], got {tau!r}.")
        self.tau: Any = tau if t.dim() == 0 else t
        self.beta = check_positive("beta", beta, strict=False)
        if self.beta >= 1:
            raise ValueError(f"Parameter `beta` must be in [0, 1), got {beta!r}.")
        self.eps = check_positive("eps", eps, strict=False)
        self.register_buffer("sq_norm_ema", torch.zeros(0, dtype=torch.float64))
        self._init_step_counter()

    def reset_parameters(self) -> None:
        self.sq_norm_ema = torch.zeros(0, dtype=torch.float64, device=self.step.device)
        self._reset_step()

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T, dt, dev = gramian.shape[0], work_dtype(gramian), gramian.device
        G = gramian.to(dt)
        G = 0.5 * (G + G.T)
        taus = torch.as_tensor(self.tau, dtype=dt).to(dev).expand(T - 1) if T > 1 else G.new_zeros(0)
        if isinstance(self.tau, Tensor) and self.tau.numel() != T - 1:
            raise ValueError(f"Parameter `tau` has {self.tau.numel()} values, expected T - 1 = {T - 1}.")
        sq = G.diagonal().clamp_min(0.0)
        if self.sq_norm_ema.shape != (T,):  # a new task count restarts the average (as TorchJD)
            self.sq_norm_ema = torch.zeros(T, dtype=dt, device=dev)
            self._reset_step()
        ema = self.beta * self.sq_norm_ema.to(dt) + (1.0 - self.beta) * sq
        self.sq_norm_ema = ema
        n = self._advance_step()
        denom = (ema / (1.0 - self.beta**n) + self.eps).sqrt()
        scales = torch.where(denom > 0, 1.0 / torch.where(denom > 0, denom, 1.0), 0.0)
        Gn = G * scales[:, None] * scales[None, :]
        w = torch.zeros(T, dtype=dt, device=dev)
        w[0] = 1.0
        if T > 1:
            top = Gn.diagonal()[1:].amax()  # the dual lives on the secondaries: scale by their largest norm
            top = torch.where(top > 0, top, torch.ones_like(top))
            Gs, b = Gn[1:, 1:] / top, (taus * Gn.diagonal()[1:] - Gn[1:, 0]) / top
            ridge = max(_RIDGE, 10.0 * torch.finfo(gramian.dtype).eps)  # a float32 Gramian is PSD to ~1e-7 only
            eye = torch.eye(T - 1, dtype=dt, device=dev)
            mu, ok = nnqp(Gs + ridge * eye, -b[None, :])
            mu4, _ = nnqp(Gs + 4 * ridge * eye, -b[None, :])
            mu, mu4 = mu[0].clamp_min(0.0), mu4[0].clamp_min(0.0)
            # an unbounded dual (infeasible constraints, Farkas) shows as μ ∝ 1/ridge; a bounded one barely moves
            infeasible = mu.norm() > _INFEASIBLE * mu4.norm()
            self._expect(ok.all() | infeasible, "the priority-constrained QP did not converge.")
            w[1:] = torch.where(infeasible, torch.zeros_like(mu), mu)
        d_sq = w @ Gn @ w
        magnitude = (w.abs() @ Gn.diagonal().clamp_min(0.0).sqrt()) ** 2
        precision = 10.0 * torch.finfo(gramian.dtype).eps
        keep = (sq[0] > 0) & (d_sq > precision * magnitude)
        factor = (sq[0] / torch.where(keep, d_sq, torch.ones_like(d_sq))).sqrt()
        return torch.where(keep, w * scales * factor, torch.zeros_like(w)).to(gramian.dtype)

    def extra_repr(self) -> str:
        tau = self.tau.tolist() if isinstance(self.tau, Tensor) else self.tau
        return f"tau={tau}, beta={self.beta}, eps={self.eps}"
