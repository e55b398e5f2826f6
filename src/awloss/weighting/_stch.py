"""``STCH``: smooth Tchebycheff scalarisation (Lin et al., ICML 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._inputs import check_int, check_positive, default_device
from .._registry import register
from ._base import Weighting
from ._helpers import as_weight_vector, check_positive_losses, positive_flag

__all__ = ["STCH"]


@register
class STCH(Weighting):
    r"""Smooth Tchebycheff scalarisation: a soft maximum of the preference-weighted regrets.

    Tchebycheff scalarisation minimises the worst task's weighted distance to an ideal point; its
    smooth version replaces the max by a log-sum-exp with smoothing :math:`\mu`, so every task gets a
    gradient, the largest regret most (:math:`\mu \to 0` recovers the max, large :math:`\mu` a
    weighted mean). With ``warmup_epochs > 0`` it follows the authors' multi-task recipe instead:
    :math:`\sum_i\log L_i` during the warm-up, the mean losses of its last epoch become a nadir
    vector :math:`n`, and STCH is then applied to :math:`\log(L_i/n_i)`, times :math:`T`.

    .. math::

        \mathcal{L} = \mu \log \sum_{i=1}^{T} \exp\Big(\frac{\lambda_i (L_i - z_i^*)}{\mu}\Big), \qquad
        w_i = \lambda_i\,\operatorname{softmax}\Big(\frac{\lambda (L - z^*)}{\mu}\Big)_i

    where:

    - :math:`L_i` is task *i*'s loss, :math:`z^*_i` the ideal point (``ideal``);
    - :math:`\lambda_i > 0` is the preference (``preference``), :math:`\mu > 0` the smoothing (``mu``).

    Args:
        num_tasks: number of tasks, ``>= 1``.
        mu: smoothing :math:`\mu > 0`. Default 1 (the authors' MTL code).
        preference: :math:`\lambda`, a float or one per task, ``> 0``. Default 1 for every task.
        ideal: ideal point :math:`z^*`, a float or one per task. Default 0 (losses are :math:`\ge 0`).
        warmup_epochs: 0 (default: the paper's formula, no state) or the number of warm-up epochs of
            the log-normalised recipe; call :meth:`step` at the end of each epoch. The official
            ``warmup_epoch = 4`` corresponds to ``warmup_epochs = 5`` (its epochs 0-4 are warm-up).
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> stch = awloss.STCH(2, mu=1.0)
        >>> stch(torch.tensor(1.0), torch.tensor(1.0))  # log(e + e) = 1 + log 2
        tensor(1.6931)
        >>> stch.weights
        tensor([0.5000, 0.5000])

    References:
        X. Lin, X. Zhang, Z. Yang, F. Liu, Z. Wang, Q. Zhang, Smooth Tchebycheff Scalarization for
        Multi-Objective Optimization, ICML 2024, https://arxiv.org/abs/2402.19078 (Eq. 8); the
        warm-up recipe from the authors' ``STCH_MTL`` code (as included in LibMTL).

    Note:
        Default: the paper's stateless formula on raw losses with ideal point 0, because the official
        warm-up ties the method to an epoch schedule and needs losses > 0. ``warmup_epochs`` reproduces
        that recipe, raising an error on a loss ``<= 0`` instead of adding 1e-20 inside the log.
    """

    name = "stch"
    aliases = ("smooth_tchebycheff",)
    stateful = False  # the paper's formula; an instance with warmup_epochs > 0 is stateful
    objective_params = ("mu", "preference", "ideal", "warmup_epochs")  # checked on load_state_dict
    preference: Tensor  # buffers (registered in __init__)
    ideal: Tensor
    epochs: Tensor
    loss_sum: Tensor
    loss_count: Tensor
    nadir: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        mu: float = 1.0,
        preference: float | Sequence[float] = 1.0,
        ideal: float | Sequence[float] = 0.0,
        warmup_epochs: int = 0,
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_tasks, task_names=task_names)
        T = self.num_tasks
        assert T is not None
        self.mu = check_positive("mu", mu)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, minimum=0)
        self.stateful = self.warmup_epochs > 0
        lam = as_weight_vector("preference", preference, T, positive=True, device="cpu")
        z = as_weight_vector("ideal", ideal, T, device="cpu")
        self._unit_preference, self._zero_ideal = bool((lam == 1).all()), bool((z == 0).all())  # skip no-op ops
        lam, z = lam.to(default_device()), z.to(default_device())
        self.register_buffer("preference", lam, persistent=False)  # constructor arguments, not state
        self.register_buffer("ideal", z, persistent=False)
        self.register_buffer("epochs", torch.zeros((), dtype=torch.int64))
        self.register_buffer("loss_sum", torch.zeros(T))
        self.register_buffer("loss_count", torch.zeros(T, dtype=torch.int64))  # per task (None is not counted)
        self.register_buffer("nadir", torch.ones(T))
        self._epoch: int | None = 0  # host mirror of `epochs`: no device sync per call

    def _epochs_done(self) -> int:
        if self._epoch is None:
            self._epoch = int(self.epochs)
        return self._epoch

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        self._epoch = None
        key = prefix + "loss_count"
        if key in state_dict and state_dict[key].dim() == 0:  # a checkpoint from before per-task counts
            state_dict[key] = state_dict[key].expand(self.loss_count.shape).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset_parameters(self) -> None:
        for b in (self.epochs, self.loss_sum, self.loss_count):
            b.zero_()
        self.nadir.fill_(1.0)
        self._epoch = 0

    def _check_values(self, vec: Tensor) -> None:
        if self.warmup_epochs:
            check_positive_losses(self, vec, super()._check_values, "its warm-up recipe takes log L")
        else:
            super()._check_values(vec)

    def _value_flag(self, d: Tensor) -> Tensor:
        return positive_flag(d) if self.warmup_epochs else super()._value_flag(d)

    def forward(self, losses: Tensor) -> Tensor:
        dtype = torch.promote_types(losses.dtype, self.preference.dtype)
        losses, lam = losses.to(dtype), self.preference.to(dtype)
        present = self._present_mask(losses)
        if not self.warmup_epochs:
            p = losses if self._zero_ideal else losses - self.ideal.to(dtype)
            if not self._unit_preference:
                p = lam * p
            if self.mu != 1.0:
                p = p / self.mu
            if present is not None:  # an absent task is left out of the soft maximum
                p = p.masked_fill(~present, float("-inf"))
            w = torch.softmax(p.detach(), dim=0)
            self._set_weights(w if self._unit_preference else lam * w)
            out = torch.logsumexp(p, dim=0)
            return out if self.mu == 1.0 else self.mu * out
        if present is not None:  # an absent task (loss 0) is left out: log 1 = 0 in the sums, weight 0
            losses = torch.where(present, losses, self.nadir.to(dtype))
        epoch = self._epochs_done()
        if epoch < self.warmup_epochs:  # warm-up: sum of log-losses
            if self.training and epoch == self.warmup_epochs - 1:
                if present is None:
                    self.loss_sum.add_(losses.detach().to(self.loss_sum.dtype))
                    self.loss_count.add_(1)
                else:
                    self.loss_sum.add_((losses.detach() * present).to(self.loss_sum.dtype))
                    self.loss_count.add_(present)
            inv = torch.reciprocal(losses.detach())
            log = torch.log(losses)
            if present is not None:
                inv, log = inv * present, log * present
            self._set_weights(inv)
            return log.sum()
        T = losses.shape[0] if present is None else present.sum()
        p = lam * torch.log(losses / self.nadir.to(dtype)) / self.mu
        if present is not None:
            p = p.masked_fill(~present, float("-inf"))
        self._set_weights(T * lam * torch.softmax(p.detach(), dim=0) / losses.detach())
        return T * self.mu * torch.logsumexp(p, dim=0)

    def step(self) -> None:
        """End of epoch: advance the warm-up and fix the nadir vector after its last epoch."""
        if not self.warmup_epochs:
            return
        epoch = self._epochs_done()
        if epoch == self.warmup_epochs - 1:
            if not bool((self.loss_count > 0).all()):
                raise RuntimeError(
                    "STCH.step(): no training losses were seen in the last warm-up epoch for task(s) "
                    f"{(self.loss_count == 0).nonzero().flatten().tolist()}; the nadir point needs each task's mean."
                )
            self.nadir.copy_(self.loss_sum / self.loss_count)
        self.epochs.add_(1)
        self._epoch = epoch + 1

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, mu={self.mu}, warmup_epochs={self.warmup_epochs}"
