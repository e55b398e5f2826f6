"""``AutomaticWeightedLoss``: the seed's module, same call, same objective, with the guards it lacked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._registry import register
from ._uncertainty import UncertaintyWeighting

__all__ = ["AutomaticWeightedLoss"]


@register
class AutomaticWeightedLoss(UncertaintyWeighting):
    r"""The seed's automatically weighted multi-task loss (Liebel & Körner's uncertainty weighting).

    A drop-in replacement for ``Mikoto10032/AutomaticWeightedLoss``: ``awl = AutomaticWeightedLoss(2)``
    then ``awl(loss1, loss2)``, with σ = 1 at init and the same objective. By default σ is learned through
    its log-variance (stable, no sign symmetry, no pole at 0); ``parameterization="sigma"`` learns σ
    itself and reproduces the seed's updates exactly, for users who need their old runs back.

    .. math::

        \mathcal{L} = \sum_i \frac{1}{2\sigma_i^2} L_i + \ln(1 + \sigma_i^2)

    where:

    - :math:`L_i` is task *i*'s loss (must be :math:`\ge 0`);
    - :math:`\sigma_i` is task *i*'s learned uncertainty, :attr:`sigma`, 1 at init;
    - :math:`w_i = 1/(2\sigma_i^2)` is reported in :attr:`weights`; at the optimum
      :math:`\sigma_i^{*2} = (L_i + \sqrt{L_i^2 + 8L_i})/4`.

    Args:
        num: number of losses, ``>= 1`` (the seed's name; ``num_tasks=`` is accepted too). Default 2.
        parameterization: ``"log_variance"`` (default; learns :math:`s = \log\sigma^2`) or ``"sigma"``
            (learns σ as the seed does, in a parameter named ``params`` so seed checkpoints load).
        **kwargs: ``task_types``, ``init`` (log-variance, default 0), ``clamp``, ``mask_zero_losses``,
            ``task_names``, as for :class:`UncertaintyWeighting` (``clamp`` needs ``"log_variance"``).

    Example:
        >>> import torch
        >>> from awloss import AutomaticWeightedLoss
        >>> awl = AutomaticWeightedLoss(2)
        >>> awl(1, 2)  # the seed's own example: 0.5 + ln 2 + 1 + ln 2
        tensor(2.8863, grad_fn=<_UWObjectiveBackward>)
        >>> awl.weights, awl.sigma
        (tensor([0.5000, 0.5000]), tensor([1., 1.]))

    References:
        L. Liebel, M. Körner. Auxiliary Tasks in Multi-task Learning. arXiv 2018,
        https://arxiv.org/abs/1805.06334.
        Mikoto10032/AutomaticWeightedLoss (2020), ``AutomaticWeightedLoss.py``.

    Note:
        The seed learns σ directly; a task whose loss is 0 then drives σ to 0 and the weight to infinity
        (its issue #2). We learn :math:`\log\sigma^2` and freeze σ of a task whose loss is exactly 0, so the
        default trajectory differs from the seed's (same objective, different parameter path). Loading a
        seed checkpoint (key ``params``) into the default parameterization converts σ to
        :math:`\log\sigma^2`.
    """

    name = "awl"
    aliases = ("automatic_weighted_loss", "liebel", "uw_log1p")

    def __init__(
        self,
        num: int = 2,
        *,
        num_tasks: int | None = None,
        parameterization: Literal["log_variance", "sigma"] = "log_variance",
        **kwargs: Any,
    ) -> None:
        if num_tasks is not None:
            num = num_tasks
        if parameterization not in ("log_variance", "sigma"):
            raise ValueError(
                f"Parameter `parameterization` must be 'log_variance' or 'sigma', got {parameterization!r}."
            )
        if parameterization == "sigma" and kwargs.get("clamp") is not None:
            raise ValueError("Parameter `clamp` needs parameterization='log_variance'.")
        kwargs.setdefault("regularizer", "log1p")
        super().__init__(num, **kwargs)
        self.parameterization = parameterization
        if parameterization == "sigma":
            del self.log_var
            self.params = nn.Parameter(torch.exp(0.5 * self.init))

    def reset_parameters(self) -> None:
        if self.parameterization == "log_variance":
            return super().reset_parameters()
        with torch.no_grad():
            self.params.copy_(torch.exp(0.5 * self.init))

    def _log_var(self) -> Tensor:
        if self.parameterization == "log_variance":
            return super()._log_var()
        return torch.log(self.params**2)

    @property
    def sigma(self) -> Tensor:
        if self.parameterization == "sigma":
            return self.params.detach().abs()
        return super().sigma

    def forward(self, losses: Tensor) -> Tensor:
        if self.parameterization == "log_variance":
            return super().forward(losses)
        # The seed's loop, term for term, so that values and gradients match it bit for bit.
        p = self.params.to(torch.promote_types(losses.dtype, self.params.dtype))
        factor = self.factor.to(p.dtype)
        total: Tensor | int = 0
        weights = []
        for i in range(losses.shape[0]):
            pi, c = p[i], factor[i] * 2
            if self.mask_zero_losses:
                active = losses[i] != 0
                pi_data = torch.where(active, pi, pi.detach())
                reg = torch.where(active, torch.log(1 + pi**2), torch.zeros_like(pi))
            else:
                pi_data, reg = pi, torch.log(1 + pi**2)
            w = c * 0.5 / (pi_data**2) if self.task_types[i] != "regression" else 0.5 / (pi_data**2)
            weights.append(w)
            total = total + (w * losses[i] + reg)
        self._set_weights(torch.stack(weights))
        assert isinstance(total, Tensor)
        return total

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        legacy, new = prefix + "params", prefix + "log_var"
        if self.parameterization == "log_variance" and legacy in state_dict and new not in state_dict:
            state_dict[new] = torch.log(state_dict.pop(legacy).detach() ** 2)
        elif self.parameterization == "sigma" and new in state_dict and legacy not in state_dict:
            state_dict[legacy] = torch.exp(0.5 * state_dict.pop(new).detach())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, parameterization={self.parameterization!r}"
