"""Plain averaging and summing of the task gradients (the baselines)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._registry import register
from ._base import GramianAggregator

__all__ = ["GradMean", "GradSum"]


@register
class GradMean(GramianAggregator):
    r"""The mean of the task gradients: the gradient of the mean loss.

    The baseline every other aggregator is compared with; identical to ``mean(losses).backward()``
    on the shared parameters.

    .. math::
        d = \frac{1}{T}\sum_{i=1}^{T} g_i

    where:
        - :math:`g_i` is row :math:`i` of the Jacobian (the gradient of task :math:`i`);
        - :math:`T` is the number of tasks.

    Args:
        none: the method has no hyper-parameters.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("grad_mean")
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
        tensor([0.5000, 1.5000])
        >>> agg.weights
        tensor([0.5000, 0.5000])

    References:
        Caruana, "Multitask Learning", Machine Learning 28, 1997.

    Note:
        Named ``grad_mean`` (class ``GradMean``) to keep it apart from the loss-level ``mean``.
    """

    name = "grad_mean"
    _uniform = True

    masked_rows = True

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T, present = gramian.shape[0], self._present()
        if present is not None:  # zero rows: weight 0, the others 1 / (number of non-zero rows)
            p = present.to(gramian.dtype)
            return p / p.sum().clamp_min(1.0)
        return torch.full((T,), 1.0 / T, dtype=gramian.dtype, device=gramian.device)


@register
class GradSum(GramianAggregator):
    r"""The sum of the task gradients: the gradient of the summed loss.

    Identical to ``sum(losses).backward()`` on the shared parameters.

    .. math::
        d = \sum_{i=1}^{T} g_i

    where:
        - :math:`g_i` is row :math:`i` of the Jacobian.

    Args:
        none: the method has no hyper-parameters.

    Example:
        >>> import torch, awloss
        >>> awloss.get("grad_sum")(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
        tensor([1., 3.])

    References:
        Caruana, "Multitask Learning", Machine Learning 28, 1997.

    Note:
        Named ``grad_sum`` (class ``GradSum``) to keep it apart from the loss-level ``sum``.
    """

    name = "grad_sum"
    _uniform = True

    masked_rows = True

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        present = self._present()
        if present is not None:  # a zero row's weight is reported as 0 (it adds nothing either way)
            return present.to(gramian.dtype)
        return torch.ones(gramian.shape[0], dtype=gramian.dtype, device=gramian.device)
