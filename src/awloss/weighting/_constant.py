"""``Constant``: fixed, user-given task weights (e.g. a main task plus small auxiliary weights)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .._inputs import default_device
from .._registry import register
from ._base import Weighting
from ._helpers import as_weight_vector

__all__ = ["Constant"]


@register
class Constant(Weighting):
    r"""Weighted sum with fixed weights given by the user.

    The most common request in practice: one main task plus auxiliary tasks with small, hand-picked
    weights. The weights live in a buffer, so they travel with ``.to(device)`` and ``state_dict()``.
    A mapping ``{task name: weight}`` also fixes the task names.

    .. math::

        \mathcal{L} = \sum_{i=1}^{T} c_i L_i

    where:

    - :math:`L_i` is task *i*'s loss;
    - :math:`c_i \ge 0` is the fixed weight of task *i* (at least one :math:`c_i > 0`); :math:`w_i = c_i`.

    Args:
        weights: one non-negative finite weight per task, as a sequence, a 1-D tensor or a mapping
            ``{name: weight}``. No default.
        task_names: optional task names (not allowed together with a mapping).

    Example:
        >>> import torch, awloss
        >>> w = awloss.Constant({"main": 1.0, "aux": 0.1})
        >>> w({"aux": torch.tensor(3.0), "main": torch.tensor(2.0)})
        tensor(2.3000)
        >>> w.weights_dict()
        {'main': 1.0, 'aux': 0.10000000149011612}

    References:
        Linear scalarisation with fixed weights; e.g. S. Liu, A. Davison, E. Johns, Self-Supervised
        Generalisation with Meta Auxiliary Learning, NeurIPS 2019 (main task plus auxiliary tasks).

    Note:
        Negative weights are refused (they would maximise a loss; use a gradient-reversal layer if that
        is what you want).
    """

    name = "constant"
    aliases = ("fixed", "static")
    permutation_equivariant = False  # each position has its own fixed weight
    task_weights: Tensor  # buffer (registered in __init__)

    def __init__(
        self, weights: Sequence[float] | Tensor | Mapping[str, float], *, task_names: Sequence[str] | None = None
    ) -> None:
        if isinstance(weights, Mapping):
            if task_names is not None:
                raise ValueError("Give the task names either in `weights` (a mapping) or in `task_names`, not both.")
            task_names, weights = list(weights.keys()), list(weights.values())
        w = as_weight_vector("weights", weights, device="cpu")  # checked on the CPU, even under meta
        if not bool((w >= 0).all()) or not bool((w > 0).any()):
            raise ValueError(f"Parameter `weights` must be >= 0 with at least one > 0, got {w.tolist()!r}.")
        super().__init__(w.numel(), task_names=task_names)
        self.register_buffer("task_weights", w.to(default_device()))

    @classmethod
    def _make_example(cls, num_tasks: int) -> Constant:
        return cls([1.0 - 0.9 * i / (num_tasks - 1) for i in range(num_tasks)] if num_tasks > 1 else [0.5])

    def _initial_weights(self) -> Tensor:
        return self.task_weights.clone()

    def forward(self, losses: Tensor) -> Tensor:
        w = self.task_weights
        if w.dtype != losses.dtype:
            dtype = torch.promote_types(losses.dtype, w.dtype)
            w, losses = w.to(dtype), losses.to(dtype)
        self._set_weights(w)
        return torch.dot(w, losses)

    def extra_repr(self) -> str:
        return f"weights={[round(v, 6) for v in self.task_weights.tolist()]}"
