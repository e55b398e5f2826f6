"""ExcessMTL: robust task weights from per-task excess-risk estimates (exponentiated gradient)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._inputs import check_int, check_positive
from .._registry import register
from ._base import Aggregator
from ._solvers import work_dtype

__all__ = ["ExcessMTL"]

_EPS = 1e-7  # under the square root of the accumulated squares and in the baseline division (as the paper's code)


@register
class ExcessMTL(Aggregator):
    r"""ExcessMTL: upweight the tasks whose estimated excess risk (distance to their optimum) is largest.

    A task's excess risk is estimated from a second-order Taylor expansion with an AdaGrad-style diagonal
    Hessian (the running sum of squared gradients); the weights follow an exponentiated-gradient
    (mirror ascent) step on the simplex, driven by the excess risks divided by their first value, so
    tasks with a noisy but irreducible loss are not chased (stateful).

    .. math::
        S \leftarrow S + J\odot J,\quad r_i = \sum_k \frac{J_{ik}^2}{\sqrt{S_{ik} + \epsilon}},\quad
        w \leftarrow \operatorname{softmax}\!\big(\log w + \eta\, r / (r^{(0)} + \epsilon)\big),
        \qquad d = \sum_i w_i g_i

    where:
        - :math:`w` starts at :math:`1/T`; :math:`r^{(0)}` is the first excess risk of each task (or its
          mean over ``n_warmup_steps`` calls, during which :math:`w` stays uniform); on the call that
          sets it, :math:`r` is used unscaled (as the official code);
        - :math:`S` is a ``T x n`` float64 buffer (:math:`\epsilon = 10^{-7}`);
        - a task whose gradient is exactly 0 (absent) is left out: weight 0, the softmax runs over the
          present tasks, its statistics are kept and its baseline is set the first time it is present;
        - the buffer ``log_weights`` holds :math:`\log w` up to a constant (the logits of the softmax).

    Args:
        robust_step_size: :math:`\eta > 0`; default ``1.0`` (TorchJD's and LibMTL's).
        n_warmup_steps: calls that only collect the baseline, an int ``>= 0``; default ``0`` (the official
            code; the paper's appendix uses three epochs of statistics).

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("excess_mtl")
        >>> _ = agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        >>> agg.weights
        tensor([0.2689, 0.7311])

    References:
        He, Zhang, Xu, Wang & Zhao, "Robust Multi-Task Learning with Excess Risks", ICML 2024,
        https://proceedings.mlr.press/v235/he24n.html (Eqs. 6, 7, 9).

    Note:
        As TorchJD's ``ExcessMTL`` (weights start at ``1/T``, not at 1 as in the official code and LibMTL,
        whose first softmax renormalises them anyway). The squared-gradient sum is kept in float64 (TorchJD:
        the Jacobian's dtype), so float32 gradients of size 1e20 do not overflow; it costs ``8·T·n`` bytes.
        Per-task baselines for absent tasks are ours (TorchJD divides by a zero baseline).
        With ``n_warmup_steps=0`` (official, TorchJD) the first call's risk enters unscaled, so its size
        matters: a task whose first gradient is large (norm ~1e8) takes a logit lead the later scaled
        risks (about 1 per call) cannot undo, and the other weights underflow to 0 (kept, for parity).
    """

    name = "excess_mtl"
    aliases = ("excessmtl",)
    stateful = True
    state_per_column = True  # a T x n buffer: awloss.backward refuses representation= (columns = samples there)
    sq_grad_sum: Tensor  # buffers (registered in __init__)
    log_weights: Tensor
    baseline: Tensor
    warmup_sum: Tensor
    baseline_set: Tensor

    def __init__(self, robust_step_size: float = 1.0, n_warmup_steps: int = 0) -> None:
        super().__init__()
        self.robust_step_size = check_positive("robust_step_size", robust_step_size)
        self.n_warmup_steps = check_int("n_warmup_steps", n_warmup_steps, minimum=0)
        for name in ("sq_grad_sum", "log_weights", "baseline", "warmup_sum"):
            self.register_buffer(name, torch.zeros(0))
        self.register_buffer("baseline_set", torch.zeros(0, dtype=torch.bool))
        self._init_step_counter()

    def reset_parameters(self) -> None:
        dev = self.step.device
        for name in ("sq_grad_sum", "log_weights", "baseline", "warmup_sum"):
            setattr(self, name, torch.zeros(0, device=dev))
        self.baseline_set = torch.zeros(0, dtype=torch.bool, device=dev)
        self._reset_step()

    def forward(self, jacobian: Tensor) -> Tensor:
        T, n = jacobian.shape
        dt = work_dtype(jacobian)
        if self.sq_grad_sum.shape != (T, n):  # first call or a new shape: start over (as TorchJD)
            self.sq_grad_sum = jacobian.new_zeros((T, n), dtype=dt)
            self.log_weights = jacobian.new_zeros(T, dtype=dt)  # log-weights up to a constant: w = softmax
            self.baseline = jacobian.new_zeros(T, dtype=dt)
            self.warmup_sum = jacobian.new_zeros(T, dtype=dt)
            self.baseline_set = torch.zeros(T, dtype=torch.bool, device=jacobian.device)
            self._reset_step()
        # Few passes over T x n, in place where they can be (two float64 buffers per call): float64 sqrt and
        # isfinite + where are several times slower than rsqrt_ and nan_to_num_ on the CPU (they made the
        # step ~3x TorchJD's).
        sq = jacobian.detach().to(dt, copy=True).square_()
        if self.check:  # a NaN/inf row is reported after the call; keep it out of the running statistics
            sq.nan_to_num_(0.0, 0.0, 0.0)  # squares are >= 0 or NaN/+inf: the non-finite entries become 0
        self.sq_grad_sum.add_(sq)
        inv = torch.add(self.sq_grad_sum, _EPS).rsqrt_()
        risk = inv.mul_(sq).sum(dim=1)
        present = sq.amax(dim=1) > 0
        step = self._advance_step()
        if step <= self.n_warmup_steps:
            self.warmup_sum.add_(risk)
        else:
            if step == self.n_warmup_steps + 1 and self.n_warmup_steps > 0:
                self.baseline = self.warmup_sum / self.n_warmup_steps
                self.baseline_set = self.baseline > 0
            fresh = present & ~self.baseline_set  # the call that sets a baseline uses r unscaled
            scaled = torch.where(fresh, risk, risk / (self.baseline + _EPS))
            self.baseline = torch.where(fresh, risk, self.baseline)
            self.baseline_set = self.baseline_set | fresh
            logits = self.log_weights + torch.where(present, self.robust_step_size * scaled, torch.zeros_like(scaled))
            self.log_weights = logits - logits.amax()  # softmax is shift invariant; this keeps it bounded
        masked = torch.where(present, self.log_weights, torch.full_like(self.log_weights, float("-inf")))
        w = torch.where(present, torch.softmax(masked, dim=0), torch.zeros_like(masked)).nan_to_num(0.0)
        w = w.to(jacobian.dtype)
        self._set_weights(w)
        return w @ jacobian

    def extra_repr(self) -> str:
        return f"robust_step_size={self.robust_step_size}, n_warmup_steps={self.n_warmup_steps}"
