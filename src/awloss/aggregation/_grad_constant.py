"""GradConstant: fixed, user-given weights on the task gradients."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._inputs import default_device
from .._registry import register
from ..weighting._helpers import as_weight_vector
from ._base import GramianAggregator

__all__ = ["GradConstant"]


@register
class GradConstant(GramianAggregator):
    r"""A fixed linear combination of the task gradients, with weights given by the user.

    The gradient-level twin of the loss-level ``constant``: the update is :math:`\sum_i c_i g_i` whatever
    the gradients. Useful as a baseline next to the adaptive aggregators, or to reproduce a run made with
    TorchJD's ``Constant``. The weights live in a buffer, so they follow ``.to(device)`` and ``state_dict()``.

    .. math::
        d = \sum_{i=1}^{T} c_i g_i

    where:
        - :math:`g_i` is row :math:`i` of the Jacobian;
        - :math:`c_i` is the fixed weight of task :math:`i`; a task whose gradient is exactly 0 (absent from
          the batch) reports weight 0, which leaves the update unchanged.

    Args:
        weights: one finite weight per task, as a sequence or a 1-D tensor (any sign, as TorchJD); the
            Jacobian must then have ``len(weights)`` rows. ``None`` (default; TorchJD has none) gives weight 1
            to every task, whatever their number: the summed gradient.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("grad_constant", weights=[1.0, 0.5])
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([1., 1.])
        >>> agg.weights
        tensor([1.0000, 0.5000])

    References:
        Linear scalarisation at the gradient level; TorchJD's ``Constant`` aggregator (Quinton & Rey,
        "Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232, 2024).

    Note:
        TorchJD returns the given weights verbatim; we report 0 for an all-zero row (an absent task), which
        does not change the update. The weights are cast to the Jacobian's dtype.
    """

    name = "grad_constant"
    zero_rows = "kept"  # fixed user weights: a zero (absent) task keeps its weight, it contributes nothing
    aliases = ("grad_fixed",)
    permutation_equivariant = False  # each position has its own weight
    task_weights: Tensor | None  # buffer (registered in __init__; None: 1 for every nonzero row)

    def __init__(self, weights: Sequence[float] | Tensor | None = None) -> None:
        super().__init__()
        if weights is None:
            self.register_buffer("task_weights", None)
            return
        as_weight_vector("weights", weights, device="cpu")  # validation (clear errors), on the CPU even under meta
        w = torch.as_tensor(weights, device="cpu").detach().to(torch.float64).reshape(-1)  # exact; cast per call
        self.register_buffer("task_weights", w.to(default_device(), copy=True))

    @classmethod
    def _make_example(cls, num_tasks: int) -> GradConstant:
        return cls([0.5] * num_tasks)  # equal weights: an inserted absent (zero) row changes nothing

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T = gramian.shape[0]
        if self.task_weights is None:
            return torch.where(gramian.diagonal() > 0, 1.0, 0.0).to(gramian.dtype)
        if T != self.task_weights.numel():
            raise ValueError(
                f"Parameter `weights` has {self.task_weights.numel()} entries but the Jacobian has {T} rows."
            )
        w = self.task_weights.to(device=gramian.device, dtype=gramian.dtype)
        return torch.where(gramian.diagonal() > 0, w, torch.zeros_like(w))

    def extra_repr(self) -> str:
        if self.task_weights is None:
            return "weights=None"
        return f"weights={[round(v, 6) for v in self.task_weights.tolist()]}"
