"""``PBI``: penalty-based boundary intersection scalarisation (MOEA/D)."""

from __future__ import annotations

from collections.abc import Sequence
import torch
from torch import Tensor

from .._inputs import check_positive, default_device
from .._registry import register
from ._base import Weighting
from ._cosmos import preference_vector
from ._helpers import as_weight_vector

__all__ = ["PBI"]

_EPSILON = 1e-12  # under the square root of d2, as TorchJD: keeps the gradient finite on the preference ray


@register
class PBI(Weighting):
    r"""Penalty-based boundary intersection: progress along a preference ray plus a penalty for leaving it.

    The losses, shifted by a reference point, are split into their length :math:`d_1` along the preference
    direction and their distance :math:`d_2` to it; minimising :math:`d_1 + \theta d_2` drives the losses
    down while keeping their ratios close to the preference. Sweeping the preference (e.g. Dirichlet
    draws) traces a Pareto front, including its non-convex parts, which a weighted sum cannot reach.

    .. math::
        d_1 = (L - z^*)^\top \hat r, \qquad d_2 = \sqrt{\|(L - z^*) - d_1 \hat r\|^2 + \epsilon}, \qquad
        \mathcal L = d_1 + \theta\, d_2

    where:
        - :math:`\hat r = r / \|r\|` is the normalised preference (``weights``), :math:`z^*` the reference;
        - :math:`\epsilon = 10^{-12}` keeps the gradient finite on the ray; the weights
          :math:`w = \partial\mathcal L/\partial L = \hat r + \theta\,(L - z^* - d_1\hat r)/d_2`
          can be negative (a task above its share is pushed back);
        - an absent task (``None``) is left out: its preference and shifted loss count as 0 (weight 0), so
          the other tasks are decomposed along the ray of their own preferences.

    Args:
        theta: penalty :math:`\theta \ge 0` on the distance to the ray; ``0`` is a weighted sum with
            weights :math:`\hat r`. Default ``5.0`` (the paper's experiments; TorchJD has no default).
        weights: the preference vector :math:`r`, one value ``>= 0`` per task, not all 0 (required).
            Stored as the buffer ``preference`` (``.weights`` holds the last call's coefficients); assign
            ``pbi.preference.copy_(new)`` between calls to move along the front.
        reference: the ideal point :math:`z^*`, one value per task, a lower bound on the losses; default
            ``None``: the origin (non-negative losses).
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> pbi = awloss.PBI(theta=5.0, weights=[1.0, 1.0])
        >>> pbi(torch.tensor([1.0, 3.0]))
        tensor(9.8995)
        >>> pbi.weights
        tensor([-2.8284,  4.2426])

    References:
        Zhang & Li, "MOEA/D: A Multiobjective Evolutionary Algorithm Based on Decomposition", IEEE TEC 11(6),
        2007, https://ieeexplore.ieee.org/document/4358754 (Sec. II-C).

    Note:
        Same objective as TorchJD's ``torchjd.scalarization.PBI`` (including its ``1e-12`` under the root);
        the preference is a buffer here (it follows ``.to()`` and ``state_dict``) and ``.weights`` reports
        the analytic gradient, which TorchJD does not expose.
    """

    name = "pbi"
    permutation_equivariant = False  # each position has its own preference
    signed_weights = True  # ∂L/∂L_i < 0 for a task past its share of the preference (the method's intent)
    preference: Tensor  # buffers (registered in __init__)
    reference: Tensor | None

    def __init__(self, theta: float = 5.0, weights: Sequence[float] | Tensor | None = None,
                 reference: Sequence[float] | Tensor | None = None, *,
                 task_names: Sequence[str] | None = None) -> None:
        r = preference_vector(weights)
        super().__init__(r.numel(), task_names=task_names)
        self.theta = check_positive("theta", theta, strict=False)
        self.register_buffer("preference", r.to(default_device(), copy=True))
        z = None if reference is None else as_weight_vector("reference", reference, r.numel())
        if (isinstance(reference, Tensor) and z is not None and reference.is_floating_point()
                and reference.numel() == r.numel()):
            z = reference.detach().reshape(-1).to(default_device(), torch.promote_types(reference.dtype, z.dtype))
        self.register_buffer("reference", z)

    @classmethod
    def _make_example(cls, num_tasks: int) -> PBI:
        return cls(weights=[1.0 - 0.5 * i / (num_tasks - 1) for i in range(num_tasks)] if num_tasks > 1 else [1.0])

    def _initial_weights(self) -> Tensor:
        w: Tensor = self.preference / self.preference.norm()
        return w

    def forward(self, losses: Tensor) -> Tensor:
        dtype = torch.promote_types(losses.dtype, self.preference.dtype)
        f = losses.to(dtype)
        r = self.preference.to(dtype)
        if self.reference is not None:
            f = f - self.reference.to(dtype)
        absent = getattr(self, "_absent", ())  # tasks given as None in this call (host-side indices)
        if absent:
            idx = torch.tensor(absent, dtype=torch.long, device=f.device)
            f, r = f.index_fill(0, idx, 0.0), r.index_fill(0, idx, 0.0)
        r = r / r.norm().clamp_min(torch.finfo(dtype).tiny)
        d1 = f @ r
        perp = f - d1 * r
        # d2 = c·sqrt(‖perp/c‖² + ε/c²), c = max(1, max|perp|) (no gradient): ‖perp‖² cannot overflow (float32
        # did at |L| > 1.8e19); c = 1 for small distances, where ε matters, so the objective is unchanged
        c = perp.detach().abs().amax().clamp_min(1.0)
        pc = perp / c
        d2c = torch.sqrt(pc @ pc + _EPSILON / (c * c))
        d2 = c * d2c
        self._set_weights(r + self.theta * pc.detach() / d2c.detach())
        out: Tensor = d1 + self.theta * d2
        return out

    def extra_repr(self) -> str:
        return f"theta={self.theta}, weights={[round(v, 6) for v in self.preference.tolist()]}"
