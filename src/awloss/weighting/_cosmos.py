"""``COSMOS``: linear scalarisation with a cosine-similarity reward toward a preference vector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._inputs import check_positive, default_device
from .._registry import register
from ._base import Weighting
from ._helpers import as_weight_vector

__all__ = ["COSMOS"]

_EPS = 1e-8  # torch.nn.functional.cosine_similarity's floor on each norm (TorchJD relies on it)


def preference_vector(weights: Sequence[float] | Tensor | None) -> Tensor:
    """The checked preference of COSMOS and PBI: one value ``>= 0`` per task, not all 0, on the CPU (float64 kept)."""
    if weights is None:
        raise TypeError("Parameter `weights` (the preference vector, one value per task) is required.")
    r = as_weight_vector("weights", weights, device="cpu")  # checked on the CPU, even under meta
    if isinstance(weights, Tensor) and weights.is_floating_point():  # keep a float64 preference exact
        r = weights.detach().reshape(-1).to("cpu", torch.promote_types(weights.dtype, r.dtype))
    if not bool((r >= 0).all()) or not bool((r > 0).any()):
        raise ValueError(f"Parameter `weights` must be >= 0 with at least one > 0, got {r.tolist()!r}.")
    return r


@register
class COSMOS(Weighting):
    r"""COSMOS scalarisation: a preference-weighted sum minus a reward for losses aligned with the preference.

    The weighted sum alone can only reach the convex parts of a Pareto front and ignores where along it the
    solution lands; subtracting :math:`\lambda\cos(r, L)` pulls the vector of losses toward the preference
    direction, so that different preferences give well-spread trade-offs. To trace the front, draw a new
    preference per batch (``Dirichlet``) and condition the model on it, as in the paper.

    .. math::
        \mathcal L = r^\top L - \lambda \frac{r^\top L}{\max(\|r\|, \epsilon)\max(\|L\|, \epsilon)}

    where:
        - :math:`r` is the preference (``weights``), :math:`\lambda` the penalty (``lambda_``);
        - :math:`\epsilon = 10^{-8}` (torch's ``cosine_similarity`` floor, as TorchJD);
        - the weights are :math:`w = r - \lambda\,\partial\cos/\partial L` with
          :math:`\partial\cos/\partial L = \hat r/\|L\| - (\hat r^\top L) L/\|L\|^3` (torch's floors
          apply to the values of the norms, as in its ``cosine_similarity``);
        - a weight can be negative when :math:`\lambda` is large (a loss past its share is pushed back);
        - an absent task (``None``) is left out of both :math:`r` and :math:`L` (weight 0).

    Args:
        lambda_: the cosine penalty :math:`\lambda \ge 0`; ``0`` is a weighted sum. The paper uses 0.01 to 8
            depending on the dataset; our default ``1.0`` is a middle value (TorchJD has no default).
        weights: the preference :math:`r`, one value ``>= 0`` per task, not all 0 (required). Stored as the
            buffer ``preference`` (``.weights`` holds the last call's coefficients); assign
            ``cosmos.preference.copy_(new)`` between calls to move along the front.
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> cosmos = awloss.COSMOS(lambda_=1.0, weights=[0.5, 0.5])
        >>> cosmos(torch.tensor([1.0, 3.0]))
        tensor(1.1056)
        >>> cosmos.weights
        tensor([0.3658, 0.5447])

    References:
        Ruchte & Grabocka, "Scalable Pareto Front Approximation for Deep Multi-Objective Learning", ICDM 2021,
        https://arxiv.org/abs/2103.13392 (Eq. 4).

    Note:
        Same objective as TorchJD's ``torchjd.scalarization.COSMOS``; the input conditioning on the
        preference is left to the model, as there. The preference is a buffer here (it follows ``.to()``
        and ``state_dict``) and ``.weights`` reports the analytic gradient.
    """

    name = "cosmos"
    permutation_equivariant = False  # each position has its own preference
    signed_weights = True  # ∂L/∂L_i < 0 for a task past its share of the preference (the method's intent)
    preference: Tensor  # buffer (registered in __init__)

    def __init__(self, lambda_: float = 1.0, weights: Sequence[float] | Tensor | None = None, *,
                 task_names: Sequence[str] | None = None) -> None:
        r = preference_vector(weights)
        super().__init__(r.numel(), task_names=task_names)
        self.lambda_ = check_positive("lambda_", lambda_, strict=False)
        self.register_buffer("preference", r.to(default_device(), copy=True))

    @classmethod
    def _make_example(cls, num_tasks: int) -> COSMOS:
        return cls(weights=[1.0 - 0.5 * i / (num_tasks - 1) for i in range(num_tasks)] if num_tasks > 1 else [1.0])

    def _initial_weights(self) -> Tensor:
        return self.preference.clone()

    def forward(self, losses: Tensor) -> Tensor:
        dtype = torch.promote_types(losses.dtype, self.preference.dtype)
        L, r = losses.to(dtype), self.preference.to(dtype)
        absent = getattr(self, "_absent", ())  # tasks given as None in this call (host-side indices)
        if absent:
            idx = torch.tensor(absent, dtype=torch.long, device=L.device)
            L, r = L.index_fill(0, idx, 0.0), r.index_fill(0, idx, 0.0)
        dot = r @ L
        # cos is scale invariant: computed on L/c, c = max(1, max|L|) (no gradient), ‖L‖² cannot overflow
        # (float32 did at |L| > 1.8e19); c = 1 below 1, where torch's eps floor applies, so it is unchanged
        c = L.detach().abs().amax().clamp_min(1.0)
        Lc = L / c
        cos = F.cosine_similarity(r, Lc, dim=0, eps=_EPS)
        with torch.no_grad():  # d cos / dL as torch differentiates it: each norm floored at eps in value only
            rhat, raw = r / r.norm().clamp_min(_EPS), Lc.norm()
            nl = raw.clamp_min(_EPS)
            inv = torch.where(raw > 0, 1.0 / torch.where(raw > 0, raw, 1.0), 0.0)
            dcos = (rhat / nl - (rhat @ Lc) * Lc * inv / nl**2) / c  # d cos(r, L/c) / dL
            self._set_weights(r - self.lambda_ * dcos)
        return dot - self.lambda_ * cos

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}, weights={[round(v, 6) for v in self.preference.tolist()]}"
