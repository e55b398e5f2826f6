"""CR-MOGM: smooth another aggregator's weights with an exponential moving average across calls."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._registry import get as _get
from .._registry import register
from ._base import Aggregator

__all__ = ["CRMOGM"]


@register
class CRMOGM(Aggregator):
    r"""Correlation-reduced multi-objective gradient manipulation: an EMA of a wrapped aggregator's weights.

    Stochastic gradients make the weights of MGDA-style methods noisy and correlated with the gradients
    they multiply, which biases the update. CR-MOGM averages the weights the wrapped method returns over
    calls and combines the *current* gradients with the average (stateful). It works with any weighted
    aggregator; its update is ``λ_kᵀJ``.

    .. math::
        \lambda_k = \alpha\,\lambda_{k-1} + (1-\alpha)\,\hat\lambda_k, \qquad d = \sum_i \lambda_{k,i}\, g_i

    where:
        - :math:`\hat\lambda_k` are the wrapped aggregator's weights for the current Jacobian;
        - :math:`\lambda_0` is ``initial_weights`` when given, else :math:`\hat\lambda_1` (the first update
          is then the wrapped method's own);
        - a task whose gradient is exactly 0 (absent) reports weight 0; its average is kept.

    Args:
        aggregator: the wrapped weighted aggregator, an instance or a registry name; default ``"mgda"``
            (the paper's main instance). TorchJD calls this argument ``weighting``.
        alpha: EMA factor on the previous weights, in ``[0, 1]``; ``0`` is the wrapped method, ``1``
            freezes :math:`\lambda_0`. Default ``0.9`` (TorchJD's; the paper lets ``α_k`` grow toward 1 as
            the learning rate decays: assign ``agg.alpha`` between calls).
        initial_weights: optional :math:`\lambda_0`, one value per task.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("cr_mogm", aggregator="mgda", alpha=0.5)
        >>> _ = agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        >>> _ = agg(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        >>> agg.weights
        tensor([0.5000, 0.5000])

    References:
        Zhou, Jiang, Dong & Xu, "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and
        Beyond", NeurIPS 2022,
        https://proceedings.neurips.cc/paper_files/paper/2022/hash/f91bd64a3620aad8e70a27ad9cb3ca57-Abstract-Conference.html.

    Note:
        As TorchJD's ``CRMOGMWeighting`` (fixed ``α``, ``λ_0 = λ̂_1``), except that we wrap an aggregator
        (an instance of this library or a name) rather than a TorchJD weighting, keep ``λ`` in a buffer
        (``state_dict`` round-trips it) and report weight 0 for an all-zero row.
    """

    name = "cr_mogm"
    aliases = ("crmogm",)
    stateful = True
    initial_weights: Tensor  # buffers (registered in __init__)
    ema_weights: Tensor

    def __init__(self, aggregator: str | Aggregator = "mgda", alpha: float = 0.9,
                 initial_weights: Any = None) -> None:
        super().__init__()
        inner = _get(aggregator) if isinstance(aggregator, str) else aggregator
        if not isinstance(inner, Aggregator) or not inner.weighted:
            raise ValueError(f"Parameter `aggregator` must be a weighted aggregator or its name, got {aggregator!r}.")
        self.aggregator = inner
        self.alpha = alpha
        init = None if initial_weights is None else torch.as_tensor(initial_weights, dtype=torch.float64).reshape(-1)
        if init is not None and not bool(torch.isfinite(init).all()):
            raise ValueError(f"Parameter `initial_weights` must be finite, got {initial_weights!r}.")
        self.register_buffer("initial_weights", init)
        self.register_buffer("ema_weights", torch.zeros(0))
        self._init_step_counter()

    @property
    def alpha(self) -> float:
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        v = float(value)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"Parameter `alpha` must be in [0, 1], got {value!r}.")
        self._alpha = v

    def reset_parameters(self) -> None:
        self.aggregator.reset()
        self.ema_weights = torch.zeros(0, device=self.step.device)
        self._reset_step()

    def forward(self, jacobian: Tensor) -> Tensor:
        T = jacobian.shape[0]
        self.aggregator.check = self.check
        self.aggregator(jacobian)
        hat = self.aggregator.weights.to(jacobian.dtype)
        if self._step == 0:
            prev = hat if self.initial_weights is None else self.initial_weights.to(hat.device, hat.dtype)
            if prev.shape != (T,):
                raise ValueError(f"Parameter `initial_weights` has {prev.numel()} entries, the Jacobian {T} rows.")
        else:
            if self.ema_weights.shape != (T,):
                raise ValueError(
                    f"The number of tasks changed from {self.ema_weights.numel()} to {T}; call reset() first."
                )
            prev = self.ema_weights.to(hat.dtype)
        lam = self.alpha * prev + (1.0 - self.alpha) * hat
        self.ema_weights = lam.detach()
        self._advance_step()
        present = jacobian.abs().amax(dim=1) > 0
        self._set_weights(torch.where(present, lam, torch.zeros_like(lam)))
        assert self._weights is not None
        update: Tensor = self._weights @ jacobian
        return update

    def extra_repr(self) -> str:
        return f"aggregator={type(self.aggregator).__name__}, alpha={self.alpha}"
