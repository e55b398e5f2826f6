"""``FAMO``: Fast Adaptive Multitask Optimization (Liu et al., NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._inputs import check_positive, default_device
from .._registry import register
from ._base import Weighting
from ._helpers import adam_step, as_weight_vector

__all__ = ["FAMO"]


@register
class FAMO(Weighting):
    r"""FAMO: balance the rates at which the task losses fall, at the cost of one scalar backward.

    The objective is a weighted sum of log-losses with weights :math:`z = \operatorname{softmax}(\xi)`
    normalised by :math:`c`. After ``optimizer.step()``, call :meth:`update` with the losses of the same
    batch recomputed under the new parameters: the change in each log-loss is the signal that moves the
    logits :math:`\xi` (one Adam step with L2 decay :math:`\gamma`), raising the weight of tasks that
    improved least. Logits, Adam moments and the last losses are buffers, so ``state_dict`` resumes exactly.

    .. math::

        \mathcal{L} = \frac{1}{c}\sum_i z_i \log(L_i - b_i + \epsilon), \quad
        c = \mathrm{sg}\Big[\sum_i \frac{z_i}{L_i - b_i + \epsilon}\Big], \quad
        w_i = \frac{z_i}{c\,(L_i - b_i + \epsilon)}

        \delta_i = \log(L_i^{\text{before}} - b_i + \epsilon) - \log(L_i^{\text{after}} - b_i + \epsilon), \quad
        \xi \leftarrow \operatorname{Adam}\big(\xi;\ \nabla_\xi\, z(\xi)^\top \delta + \gamma\,\xi\big)

    where:

    - :math:`L_i` is task *i*'s loss, :math:`b_i` its known lower bound (``min_losses``, default 0);
    - :math:`z = \operatorname{softmax}(\xi)`; the weights :math:`w` sum to 1;
    - the Adam step has learning rate ``lr`` and weight decay :math:`\gamma` (``gamma``).

    Args:
        num_tasks: number of tasks, ``>= 1``.
        lr: learning rate of the logits, ``> 0``. Default 0.025 (official).
        gamma: weight decay of the logits, ``>= 0``. Default 1e-3 (see Note).
        min_losses: lower bounds :math:`b_i` of the losses, a float or one per task. Default 0.
        eps: :math:`\epsilon > 0` inside the logs. Default 1e-8 (official).
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> famo = awloss.FAMO(2)
        >>> total = famo(torch.tensor([1.0, 4.0]))
        >>> famo.weights  # z = (1/2, 1/2): w_i = (1/L_i) / sum_j (1/L_j)
        tensor([0.8000, 0.2000])
        >>> famo.update(torch.tensor([0.5, 4.0]))  # task 0 improved, task 1 did not
        >>> famo.logits  # so task 1's logit rises
        tensor([-0.0250,  0.0250])

    References:
        B. Liu, Y. Feng, P. Stone, Q. Liu, FAMO: Fast Adaptive Multitask Optimization, NeurIPS 2023,
        https://arxiv.org/abs/2306.03792 (Alg. 1); official code github.com/Cranial-XIX/FAMO (``famo.py``).

    Note:
        The official defaults of :math:`\gamma` disagree (0.01 in ``famo.py`` and the CLI, 1e-3 in the
        NYUv2 script of the paper's main experiment, 1e-5 in ``weight_methods.py``). We use 1e-3, as
        that script and TorchJD's port do: per-step log-loss changes are small (about 1e-2), and with 0.01
        the decay term dominates them so the logits barely move (our toy test in ``tests/methods`` shows
        matched loss-decrease rates at 1e-3 and a stalled task at 0.01). The official ``backward`` also
        clips the shared gradient norm to 1; we leave clipping to the user's loop. Calls in ``eval()``
        mode do not record losses for :meth:`update`. A task absent (``None``) or exactly at its bound
        (:math:`L_i = b_i`: its log is :math:`\log\epsilon`, which gave every other task a weight of about
        1e-8) is left out of :math:`c` and of the logit update, with weight 0, as if :math:`T-1` tasks were given.
    """

    name = "famo"
    stateful = True
    objective_params = ("min_losses", "eps")  # a checkpoint saved with others is refused on load
    min_losses: Tensor  # buffers (registered in __init__)
    shift: Tensor
    logits: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    prev_log_gap: Tensor
    prev_active: Tensor
    adam_step: Tensor
    has_prev: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        lr: float = 0.025,
        gamma: float = 1e-3,
        min_losses: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_tasks, task_names=task_names)
        T = self.num_tasks
        assert T is not None
        self.lr = check_positive("lr", lr)
        self.gamma = check_positive("gamma", gamma, strict=False)
        self.eps = check_positive("eps", eps)
        b_host = as_weight_vector("min_losses", min_losses, T, device="cpu")
        b = b_host.to(default_device())
        self.register_buffer("min_losses", b, persistent=False)  # constructor argument, not state
        self.register_buffer("shift", b - self.eps, persistent=False)
        self._zero_min = bool((b_host == 0).all())
        self.requires_nonnegative = self._zero_min  # then the base's fast check covers L >= b
        for name in ("logits", "exp_avg", "exp_avg_sq", "prev_log_gap"):
            self.register_buffer(name, torch.zeros(T))
        self.register_buffer("prev_active", torch.ones(T, dtype=torch.bool))  # tasks of the last call with L > b
        self.register_buffer("adam_step", torch.zeros(()))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))
        self._has_prev_host: bool | None = False  # host mirrors of `has_prev` and `adam_step`: no device
        self._count: int | None = 0  # sync per call
        self._prev_all_active: bool | None = True  # host mirror: every task of the last call had L > b

    def reset_parameters(self) -> None:
        for b in (self.logits, self.exp_avg, self.exp_avg_sq, self.prev_log_gap, self.adam_step, self.has_prev):
            b.zero_()
        self.prev_active.fill_(True)
        self._has_prev_host, self._count, self._prev_all_active = False, 0, True

    def _check_values(self, vec: Tensor) -> None:
        super()._check_values(vec)
        if self._zero_min:
            return
        below = vec.detach() < self.min_losses.to(vec.dtype)
        present = self._present_mask(vec)
        if present is not None:
            below &= present
        if bool(below.any()):
            i = int(below.nonzero()[0, 0])
            label = f"`{self._task_names[i]}`" if self._task_names else f"`losses[{i}]`"
            raise ValueError(
                f"Loss {label} = {float(vec[i].detach())} is below its lower bound `min_losses[{i}]` = "
                f"{float(self.min_losses[i])}; FAMO takes log(L - min_losses): lower `min_losses`."
            )

    def _value_flag(self, d: Tensor) -> Tensor:
        if self._zero_min:
            return super()._value_flag(d)
        return torch.sqrt(d - self.min_losses.to(d.dtype)).sum()  # NaN below the bound

    def _next_count(self) -> int:
        self._count = (int(self.adam_step) if self._count is None else self._count) + 1
        return self._count

    def _initial_weights(self) -> Tensor:
        return torch.softmax(self.logits, dim=0)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        self._has_prev_host = self._count = self._prev_all_active = None  # re-read from the buffers when needed
        if prefix + "logits" in state_dict:  # a checkpoint from before `prev_active`: every task was active
            state_dict.setdefault(prefix + "prev_active", torch.ones_like(self.prev_active))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _active(self, losses: Tensor) -> Tensor | None:
        """Tasks present with ``L > b`` (``None``: all, proven by the value check); the others are left out."""
        present = self._present_mask(losses)
        if self._all_positive and present is None:
            return None
        active = losses.detach() > self.min_losses.to(losses.dtype)
        return active if present is None else active & present

    def forward(self, losses: Tensor) -> Tensor:
        dtype = torch.promote_types(losses.dtype, self.logits.dtype)
        losses = losses.to(dtype)
        z = torch.softmax(self.logits.to(dtype), dim=0)
        active = self._active(losses)
        out, w, log_gap = _famo_objective(losses, z, self.shift.to(dtype), active)
        self._set_weights(w)
        if self.training:
            self.prev_log_gap.copy_(log_gap.detach())
            if active is not None:
                self.prev_active.copy_(active)
            elif not self._prev_all_active:
                self.prev_active.fill_(True)
            self._prev_all_active = active is None
            if not self._has_prev_host:
                self.has_prev.fill_(True)
                self._has_prev_host = True
        return out

    @torch.no_grad()
    def update(self, *losses: Any) -> None:
        """Move the logits with the losses of the same batch recomputed after ``optimizer.step()``."""
        new = self._loss_vector(losses, sync=False).detach().to(self.logits.dtype)
        if self._has_prev_host is None:
            self._has_prev_host = bool(self.has_prev)
        if not self._has_prev_host:
            raise RuntimeError("FAMO.update() needs a training call first: `total = famo(losses)` before the step.")
        if self._prev_all_active is None:
            self._prev_all_active = bool(self.prev_active.all())
        z = torch.softmax(self.logits, dim=0)
        active = self._active(new)
        if active is None and self._prev_all_active:  # every task present with L > b, now and before
            delta = self.prev_log_gap - torch.log(new - self.shift)
            grad = z * (delta - torch.dot(z, delta))  # (∂z/∂ξ)ᵀ δ for the softmax Jacobian
            adam_step(
                self.logits, grad, self.exp_avg, self.exp_avg_sq, self.adam_step, self._next_count(),
                lr=self.lr, weight_decay=self.gamma,
            )
            return
        # A task absent or at its bound (then or now) has no log-loss change: the softmax over the other
        # tasks moves, as for T - 1 tasks, and its logit and Adam moments stay as they are.
        active = self.prev_active if active is None else active & self.prev_active
        gap = torch.where(active, new - self.shift, torch.ones_like(new))
        delta = torch.where(active, self.prev_log_gap - torch.log(gap), torch.zeros_like(new))
        za = z * active
        za = za / za.sum().clamp_min(torch.finfo(za.dtype).tiny)
        grad = za * (delta - torch.dot(za, delta))
        kept = [b.clone() for b in (self.logits, self.exp_avg, self.exp_avg_sq)]
        adam_step(
            self.logits, grad, self.exp_avg, self.exp_avg_sq, self.adam_step, self._next_count(),
            lr=self.lr, weight_decay=self.gamma,
        )
        for b, old in zip((self.logits, self.exp_avg, self.exp_avg_sq), kept):
            b.copy_(torch.where(active, b, old))

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, lr={self.lr}, gamma={self.gamma}"


def _famo_objective(
    losses: Tensor, z: Tensor, shift: Tensor, active: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(Σ z log(L - shift) / c, w, log(L - shift))`` with ``c`` a constant (a fused autograd.Function
    measured slower: its Python overhead exceeds the four nodes it saves). Tasks outside ``active``
    (absent, or at their bound) are left out of the sum and of ``c``: weight 0."""
    if active is None:
        gap = losses - shift
        log_gap = torch.log(gap)
        zg = z / gap.detach()
        c = zg.sum()
        return torch.dot(z, log_gap) / c, (zg / c).detach(), log_gap.detach()
    gap = torch.where(active, losses - shift, torch.ones_like(losses))
    log_gap = torch.log(gap)
    za = z * active
    zg = za / gap.detach()
    c = zg.sum()
    c = torch.where(c > 0, c, torch.ones_like(c))  # no active task: weights 0, objective 0
    return torch.dot(za, log_gap) / c, (zg / c).detach(), log_gap.detach()

