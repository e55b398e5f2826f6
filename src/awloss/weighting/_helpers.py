"""Small helpers shared by the loss-level methods: positivity checks and an in-place Adam step on buffers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._inputs import check_positive, default_device
from ._base import Weighting

__all__ = ["positive_flag", "check_strictly_positive", "check_positive_losses", "adam_step", "as_weight_vector", "PositiveLossWeighting"]


def check_strictly_positive(module: torch.nn.Module, vec: Tensor, why: str) -> None:
    """Raise a clear error if a loss is ``<= 0`` (one host synchronisation; part of the input validation)."""
    d = vec.detach()
    if float(d.min()) > 0:  # one reduction, one sync; NaN fails it and is reported by the base check
        return
    names = getattr(module, "task_names", None)
    for i, v in enumerate(d.tolist()):
        if not v > 0:
            label = f"`{names[i]}`" if names else f"`losses[{i}]`"
            raise ValueError(
                f"Loss {label} must be > 0 for {type(module).__name__} ({why}), got {v}; pass `eps > 0` to "
                "shift every loss by eps, or make sure the loss cannot reach 0."
            )


def positive_flag(d: Tensor) -> Tensor:
    """On the device: finite iff every loss is finite and ``> 0`` (log: -inf at 0, NaN below). No host read."""
    return torch.log(d).sum()


def check_positive_losses(module: torch.nn.Module, vec: Tensor, base_check: Any, why: str) -> None:
    """Finite and ``> 0`` in two host reads on the fast path; on failure the base check or ours names the loss."""
    d = vec.detach()
    if math.isfinite(float(d.sum())) and float(d.min()) > 0:
        return
    base_check(vec)
    check_strictly_positive(module, vec, why)


def as_weight_vector(
    name: str, value: object, num_tasks: int | None = None, *, positive: bool = False, device: Any = None
) -> Tensor:
    """Validate a per-task float vector (a float is broadcast when ``num_tasks`` is given).

    The values are checked on the CPU (also under ``torch.device("meta")``); the result is placed on
    ``device`` (default: where factory functions put tensors, see :func:`awloss._inputs.default_device`).
    """
    try:
        if isinstance(value, Tensor):
            value = value.detach().to("cpu")
        t = torch.as_tensor(value, dtype=torch.float64, device="cpu").reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"Parameter `{name}` must be a float or a sequence of floats, got {value!r}.") from None
    if t.numel() == 1 and num_tasks is not None:
        t = t.expand(num_tasks).clone()
    if num_tasks is not None and t.numel() != num_tasks:
        raise ValueError(f"Parameter `{name}` must have {num_tasks} entries (one per task), got {value!r}.")
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"Parameter `{name}` must be finite, got {value!r}.")
    if positive and not bool((t > 0).all()):
        raise ValueError(f"Parameter `{name}` must be > 0 for every task, got {value!r}.")
    return t.to(dtype=torch.get_default_dtype(), device=default_device() if device is None else device)


@torch.no_grad()
def adam_step(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: Tensor,
    count: int,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> None:
    """One Adam update (``torch.optim.Adam``'s formula, L2 ``weight_decay``) on tensors kept as buffers.

    ``count`` is the step number after this update (1 for the first), kept on the host by the caller so
    the bias corrections are Python floats; ``step`` is its buffer copy for ``state_dict``. Keeping the
    moments and the step count in buffers puts the method's optimizer state inside its ``state_dict``, so a
    checkpoint resumes with the identical next update. No host synchronisation.
    """
    b1, b2 = betas
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    step.add_(1)
    exp_avg.lerp_(grad, 1 - b1)
    exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    bias1, bias2_sqrt = 1 - b1**count, math.sqrt(1 - b2**count)
    denom = exp_avg_sq.sqrt().div_(bias2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias1)


class PositiveLossWeighting(Weighting):
    """Base of the methods that need every loss ``> 0`` (they take ``log L`` or ``1/L``).

    A loss ``<= 0`` raises an error naming it, or every loss is shifted by ``eps > 0`` (subclasses add
    ``self.eps`` in ``forward``). ``positive_reason`` finishes the error message.
    """

    requires_nonnegative = True
    positive_reason: ClassVar[str] = "it takes log L"

    def __init__(
        self, num_tasks: int | None = None, *, eps: float = 0.0, task_names: Sequence[str] | None = None
    ) -> None:
        super().__init__(num_tasks, task_names=task_names)
        self.eps = check_positive("eps", eps, strict=False)

    @staticmethod
    def _weight_dtype(losses: Tensor) -> torch.dtype:
        """At least float32: ``1/L`` of a float16 loss below 1/65504 (about 1.5e-5) overflows in float16."""
        return torch.promote_types(losses.dtype, torch.float32)

    def _check_values(self, vec: Tensor) -> None:
        if self.eps == 0.0:
            check_positive_losses(self, vec, super()._check_values, self.positive_reason)
        else:
            super()._check_values(vec)

    def _value_flag(self, d: Tensor) -> Tensor:
        return positive_flag(d) if self.eps == 0.0 else super()._value_flag(d)
