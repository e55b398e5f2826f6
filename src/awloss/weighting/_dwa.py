"""``DWA``: Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._base import Weighting

__all__ = ["DWA"]


@register
class DWA(Weighting):
    r"""Dynamic Weight Average: weigh each task by how slowly its loss has been falling.

    Once per epoch, :meth:`step` turns the ratio of the last two epoch-mean losses into weights with a
    tempered softmax: a task whose loss fell less gets more weight. The module averages the training
    losses it sees itself (calls in ``train()`` mode between two :meth:`step` calls). The first two
    epochs, with no two averages to compare yet, use weight 1 for every task.

    .. math::

        w_i(t) = \frac{T \exp(r_i(t-1)/\tau)}{\sum_j \exp(r_j(t-1)/\tau)}, \qquad
        r_i(t-1) = \frac{\bar L_i(t-1)}{\bar L_i(t-2)}, \qquad \mathcal{L} = \sum_i w_i(t) L_i

    where:

    - :math:`\bar L_i(e)` is task *i*'s mean training loss over epoch *e*;
    - :math:`\tau > 0` is the temperature (large :math:`\tau` gives equal weights);
    - :math:`T` is the number of tasks, so the weights sum to :math:`T`.

    Args:
        num_tasks: number of tasks, ``>= 1``.
        temperature: :math:`\tau`, ``> 0``. Default 2 (the paper's value).
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> dwa = awloss.DWA(2)
        >>> for epoch_losses in ([1.0, 1.0], [0.5, 1.0], [0.25, 1.0]):
        ...     total = dwa(torch.tensor(epoch_losses))
        ...     dwa.step()
        >>> dwa.weights  # task 0 kept falling (r = 0.5), task 1 did not (r = 1)
        tensor([0.8756, 1.1244])

    References:
        S. Liu, E. Johns, A. J. Davison, End-to-End Multi-Task Learning with Attention, CVPR 2019,
        https://arxiv.org/abs/1803.10704 (Eq. 7, :math:`\tau = 2`, :math:`w = 1` for the first two epochs).

    Note:
        The official code keeps the epoch losses in the training script; here the module accumulates
        them (``state_dict`` holds the running sums and the last two means, so training resumes
        exactly). A previous-epoch mean of 0 gives :math:`r_i = 1` (no information) instead of NaN
        or an infinite ratio that would make the weights one-hot. A task given as ``None`` is left out of its
        epoch mean (a task absent all epoch keeps its last mean) and, in that call, the others are weighed
        :math:`(T-1)\operatorname{softmax}` over the present tasks. Calls in ``eval()`` mode (validation)
        are not accumulated.
    """

    name = "dwa"
    aliases = ("dynamic_weight_average",)
    stateful = True
    objective_params = ("temperature",)  # a checkpoint saved with another temperature is refused on load
    loss_sum: Tensor  # buffers (registered in __init__)
    loss_count: Tensor
    absent_count: Tensor
    history: Tensor
    epochs: Tensor
    current: Tensor

    def __init__(self, num_tasks: int, *, temperature: float = 2.0, task_names: Sequence[str] | None = None) -> None:
        super().__init__(num_tasks, task_names=task_names)
        self.temperature = check_positive("temperature", temperature)
        T = self.num_tasks
        assert T is not None
        self.register_buffer("loss_sum", torch.zeros(T))
        self.register_buffer("loss_count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("absent_count", torch.zeros(T, dtype=torch.int64))  # calls with the task None
        self.register_buffer("history", torch.zeros(2, T))  # [mean(e-2), mean(e-1)]
        self.register_buffer("epochs", torch.zeros((), dtype=torch.int64))
        self.register_buffer("current", torch.ones(T))

    def reset_parameters(self) -> None:
        for b in (self.loss_sum, self.loss_count, self.absent_count, self.history, self.epochs):
            b.zero_()
        self.current = torch.ones_like(self.current)

    def _initial_weights(self) -> Tensor:
        return self.current.clone()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        if prefix + "loss_sum" in state_dict:  # a checkpoint from before `absent_count`: no task was absent
            state_dict.setdefault(prefix + "absent_count", torch.zeros_like(self.absent_count))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, losses: Tensor) -> Tensor:
        present = self._present_mask(losses)
        if self.training:
            self.loss_sum.add_(losses.detach())  # an absent task adds its 0 and counts in `absent_count`
            self.loss_count.add_(1)
            if present is not None:
                self.absent_count.add_(~present)
        w = self.current  # step() replaces this tensor instead of writing into it, so w stays valid
        if w.dtype != losses.dtype:
            dtype = torch.promote_types(losses.dtype, w.dtype)
            w, losses = w.to(dtype), losses.to(dtype)
        if present is not None:  # as if T - 1 tasks were given: T-1 times the softmax over the present tasks
            w = w * present
            w = w * (present.sum() / w.sum())
        self._set_weights(w)
        return torch.dot(w, losses)

    def step(self) -> None:
        """End of epoch: store this epoch's mean losses and compute the next epoch's weights."""
        if int(self.loss_count) == 0:
            raise RuntimeError(
                "DWA.step() was called but no training losses were seen since the last step(); call the module "
                "on each training batch (in train() mode), then step() once at the end of the epoch."
            )
        seen = self.loss_count - self.absent_count  # calls in which each task was present
        mean = self.loss_sum / seen.clamp_min(1)
        if int(self.epochs) >= 1:  # a task absent for the whole epoch keeps its last mean (ratio 1)
            mean = torch.where(seen > 0, mean, self.history[1])
        self.history[0].copy_(self.history[1])
        self.history[1].copy_(mean)
        self.epochs.add_(1)
        self.loss_sum.zero_()
        self.loss_count.zero_()
        self.absent_count.zero_()
        if int(self.epochs) >= 2:
            prev, cur = self.history[0], self.history[1]
            ratio = torch.where(prev > 0, cur / prev.clamp_min(torch.finfo(prev.dtype).tiny), torch.ones_like(cur))
            w = self.current.numel() * torch.softmax(ratio / self.temperature, dim=0)
            self.current = w.to(self.current.dtype)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, temperature={self.temperature}"
