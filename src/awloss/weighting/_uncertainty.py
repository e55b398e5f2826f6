"""Uncertainty weighting: Kendall, Gal & Cipolla (2018) and Liebel & Körner (2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._inputs import default_device
from .._registry import register
from ._base import Weighting
from ._uncertainty_kernel import _uw_objective, _UWObjective

__all__ = ["UncertaintyWeighting"]

_FACTORS = {"regression": 0.5, "classification": 1.0}


@register
class UncertaintyWeighting(Weighting):
    r"""Homoscedastic uncertainty weighting with one learned log-variance per task.

    Each task's loss is divided by a learned variance and a regulariser keeps the variance from growing
    without bound, so noisy or large-scale tasks are down-weighted automatically. The learnable is the
    log-variance :math:`s_i = \log\sigma_i^2` for both regularisers: no sign symmetry and no pole at
    :math:`\sigma = 0`. Tasks whose loss is exactly 0 (or ``None``, absent from the batch) keep their weight
    but do not move their :math:`s_i`, so they cannot drag :math:`\sigma_i` to 0.

    .. math::

        \mathcal{L} = \sum_i c_i e^{-s_i} L_i + r(s_i), \qquad
        r(s) = \tfrac12 s \ (\text{"log"}) \quad\text{or}\quad r(s) = \ln(1 + e^{s}) \ (\text{"log1p"})

    where:

    - :math:`L_i` is task *i*'s loss (must be :math:`\ge 0`);
    - :math:`s_i = \log\sigma_i^2` is the learned log-variance, :math:`\sigma_i` is :attr:`sigma`;
    - :math:`c_i = \tfrac12` for a regression task, :math:`1` for a classification task;
    - the weight reported in :attr:`weights` is :math:`w_i = c_i e^{-s_i}`. At the optimum over
      :math:`s`, "log" gives :math:`w_i = 1/(2L_i)` for both task types; "log1p" gives
      :math:`w_i = c_i/v^*` with :math:`v^* = (c_iL_i + \sqrt{c_i^2L_i^2 + 4c_iL_i})/2`.

    Args:
        num_tasks: number of tasks, ``>= 1``.
        regularizer: ``"log"`` (Kendall et al., default) or ``"log1p"`` (Liebel & Körner).
        task_types: ``"regression"`` or ``"classification"``, one for all tasks or one per task.
            Default ``"regression"`` (the factor ½ of Kendall's Eq. 7, used by most code).
        init: initial log-variance :math:`s_0`, a float or one per task. Default 0 (σ = 1), as in
            Nash-MTL's code; LibMTL and MTAN use −0.5.
        clamp: optional ``(min, max)`` range for :math:`s`, e.g. ``(-10, 10)``; ``None`` (default) for none.
        mask_zero_losses: if ``True`` (default), a task whose loss is exactly 0 does not update its
            :math:`s_i` and contributes no regulariser.
        task_names: optional task names (mapping inputs are read in this order).

    Example:
        >>> import torch, awloss
        >>> uw = awloss.UncertaintyWeighting(2, task_types=("regression", "classification"))
        >>> total = uw(torch.tensor(2.0), torch.tensor(0.5))
        >>> total
        tensor(1.5000, grad_fn=<_UWObjectiveBackward>)
        >>> uw.weights
        tensor([0.5000, 1.0000])

    References:
        A. Kendall, Y. Gal, R. Cipolla. Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
        Geometry and Semantics. CVPR 2018, https://arxiv.org/abs/1705.07115 (Eqs. 7 and 10).
        L. Liebel, M. Körner. Auxiliary Tasks in Multi-task Learning. arXiv 2018,
        https://arxiv.org/abs/1805.06334.

    Note:
        Kendall's paper writes the regulariser as :math:`\log\sigma = \tfrac12 s`; several official codes use
        :math:`s` (yaringal's, equilibrium weight :math:`1/L`, i.e. the whole objective doubled) — we follow
        the paper. Liebel & Körner's :math:`\ln(1+\sigma^2)` is learned here through :math:`s` (as
        :math:`\mathrm{softplus}(s)`) rather than through :math:`\sigma`, which changes the optimisation
        path but not the objective. The zero-loss mask is ours (the seed's issue #2).
    """

    name = "uw"
    aliases = ("uncertainty", "uncertainty_weighting", "kendall")
    learnable = True
    stateful = True
    requires_nonnegative = True
    _fused_check = True  # the fused objective is NaN/inf for a NaN, inf or negative loss: it is the check
    objective_params = ("regularizer", "task_types", "clamp")  # checked on load_state_dict (see Weighting)
    factor: Tensor  # buffers (registered in __init__)
    init: Tensor
    log_var: nn.Parameter  # log σ² per task (absent in AutomaticWeightedLoss(parameterization="sigma"))

    def __init__(
        self,
        num_tasks: int,
        *,
        regularizer: Literal["log", "log1p"] = "log",
        task_types: str | Sequence[str] = "regression",
        init: float | Sequence[float] = 0.0,
        clamp: tuple[float, float] | None = None,
        mask_zero_losses: bool = True,
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_tasks, task_names=task_names)
        T = self.num_tasks
        assert T is not None
        if regularizer not in ("log", "log1p"):
            raise ValueError(f"Parameter `regularizer` must be 'log' or 'log1p', got {regularizer!r}.")
        types = [task_types] * T if isinstance(task_types, str) else list(task_types)
        if len(types) != T or any(t not in _FACTORS for t in types):
            raise ValueError(
                f"Parameter `task_types` must be 'regression' or 'classification', once or {T} times, "
                f"got {task_types!r}."
            )
        init_t = torch.as_tensor(init, dtype=torch.float32, device="cpu").reshape(-1)  # checked on the CPU
        if init_t.numel() == 1:
            init_t = init_t.expand(T).clone()
        if init_t.numel() != T or not torch.isfinite(init_t).all():
            raise ValueError(f"Parameter `init` must be one finite float or {T} of them, got {init!r}.")
        init_t = init_t.to(default_device())  # `meta` under `with torch.device("meta")`
        if clamp is not None:
            lo, hi = (float(c) for c in clamp)
            if not lo < hi:
                raise ValueError(f"Parameter `clamp` must be (min, max) with min < max, got {clamp!r}.")
            clamp = (lo, hi)
        self.regularizer = regularizer
        self.task_types = tuple(types)
        self.clamp = clamp
        self.mask_zero_losses = bool(mask_zero_losses)
        self.register_buffer("factor", torch.tensor([_FACTORS[t] for t in types]), persistent=False)
        self.register_buffer("init", init_t, persistent=False)
        self.log_var = nn.Parameter(init_t.clone())

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.log_var.copy_(self.init)

    def _log_var(self) -> Tensor:
        s = self.log_var
        return s if self.clamp is None else s.clamp(*self.clamp)

    @property
    def sigma(self) -> Tensor:
        """Detached ``Tensor[T]`` of the current σ_i = exp(s_i / 2)."""
        return torch.exp(0.5 * self._log_var().detach())

    def _initial_weights(self) -> Tensor:
        return self.factor * torch.exp(-self._log_var().detach())

    def forward(self, losses: Tensor) -> Tensor:
        return self._weigh(self._log_var(), self.factor, losses)

    def _weigh(self, s: Tensor, factor: Tensor, losses: Tensor) -> Tensor:
        """The objective for log-variances ``s`` and factors ``factor`` (same device as ``losses``)."""
        if s.dtype != losses.dtype or factor.dtype != losses.dtype:
            dtype = torch.promote_types(losses.dtype, s.dtype)
            s, losses, factor = s.to(dtype), losses.to(dtype), factor.to(dtype)
        log1p = self.regularizer == "log1p"
        mask = self.mask_zero_losses
        if torch.compiler.is_compiling():  # plain ops: the compiler fuses them
            out, w = _uw_objective(s, losses, factor, log1p, mask and not self._all_positive)
        else:  # eager: one fused autograd node (9 to 11 ops, forward and backward, the value check included)
            c = self.__dict__.get("_one_factor")
            if c is None:  # one float when every task has the same factor (two ops fewer), read once
                c = self.__dict__["_one_factor"] = _FACTORS[self.task_types[0]] if len(set(self.task_types)) == 1 else 0
            # (torch leaves Function.apply unannotated)
            out, w = _UWObjective.apply(s, losses, c or factor, log1p, mask)  # type: ignore[no-untyped-call]
            self._push_flag(out.detach(), losses)  # deferred check: `out` is NaN/inf for a bad loss
        self._set_weights(w)
        return out

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        s = state_dict.get(prefix + "log_var")
        if isinstance(s, Tensor) and s.device.type != "meta" and not torch.isfinite(s).all():
            raise ValueError(
                f"Checkpoint key `{prefix}log_var` must be finite, got {s.tolist()}: a log-variance of -inf or "
                "inf makes the weight infinite or 0. Reset those entries (0 is σ = 1) before loading."
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, regularizer={self.regularizer!r}"

    @staticmethod
    def equilibrium_weight(loss: float, *, regularizer: str = "log", task_type: str = "regression") -> float:
        """The weight :math:`w^*` at the optimum over :math:`s` for a constant loss ``loss > 0``.

        Example:
            >>> from awloss import UncertaintyWeighting as UW
            >>> UW.equilibrium_weight(0.25), round(UW.equilibrium_weight(1.0, regularizer="log1p"), 4)
            (2.0, 0.5)
        """
        c = _FACTORS[task_type]
        if regularizer == "log":
            return 1.0 / (2.0 * loss)
        v: float = (c * loss + (c * c * loss * loss + 4 * c * loss) ** 0.5) / 2.0
        return c / v

