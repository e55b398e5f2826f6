"""What ``AutomaticWeightedLoss`` does for the seed's users: the seed's call forms, its checkpoints, and
error messages that say what the seed did with an input we refuse and how to get that back."""

from __future__ import annotations

import numbers
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["count", "pad", "explain", "negative_hint", "seed_objective", "convert_state", "user_stacklevel"]


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning issued by our caller at the first frame outside torch/awloss."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("torch", "awloss"):
        frame, level = frame.f_back, level + 1
    return level


def count(losses: tuple[Any, ...]) -> int | None:
    """How many losses a call gives, or ``None`` when the base class decides (mappings, odd shapes)."""
    if len(losses) != 1:
        return len(losses)
    (only,) = losses
    if isinstance(only, Mapping):
        return None
    if isinstance(only, Tensor):
        return only.numel() if only.dim() == 1 else (1 if only.dim() == 0 else None)
    if isinstance(only, Sequence) and not isinstance(only, (str, bytes)):
        return len(only)
    return 1


def pad(losses: tuple[Any, ...], num: int) -> tuple[Any, ...]:
    """The call's losses followed by ``None`` up to ``num`` (``count(losses) < num``)."""
    only = losses[0] if len(losses) == 1 else None
    if isinstance(only, Tensor) and only.dim() == 1:
        items = list(only.unbind(0))
    elif len(losses) == 1 and isinstance(only, Sequence) and not isinstance(only, (str, bytes)):
        items = list(only)
    else:
        items = list(losses)
    return (items + [None] * (num - len(items)),)


def _items(losses: tuple[Any, ...]) -> list[Any]:
    if len(losses) == 1 and isinstance(losses[0], Sequence) and not isinstance(losses[0], (str, bytes)):
        return list(losses[0])
    if len(losses) == 1 and isinstance(losses[0], Mapping):
        return list(losses[0].values())
    return list(losses)


def explain(error: Exception, losses: tuple[Any, ...], num: int) -> Exception:
    """``error`` with what the seed did for such an input and how to get it back, when we know."""
    items = _items(losses)
    tensors = [x for x in items if isinstance(x, Tensor)]
    hint = ""
    if tensors and any(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in items):
        hint = (
            "The seed accepted it as a constant: its σ still learned from the value, but the model got no "
            "gradient from that task. To get that back, pass it as a tensor on the other losses' device, e.g. "
            "`loss.new_tensor(value)`; if it came from `.item()`, pass the tensor itself instead."
        )
    elif len(losses) == 1 and isinstance(losses[0], Tensor) and losses[0].dim() == 1 and losses[0].numel() > num:
        hint = (
            "A single 1-D tensor is read as one loss per task. If it is one task's per-sample loss, the seed "
            "returned a per-sample total; reduce it first: `awl(loss.mean())` equals the seed's "
            "`awl(loss).mean()`."
        )
    elif any(x.dim() > 0 and x.numel() > 1 for x in tensors):
        hint = (
            "The seed broadcast it and returned a per-sample total, which you then reduced; "
            "`awl(loss1.mean(), loss2.mean())` equals the seed's `awl(loss1, loss2).mean()`."
        )
    elif (n := count(losses)) is not None and n > num:
        hint = f"The seed raised an IndexError here; construct it with `AutomaticWeightedLoss({n})`."
    if not hint:
        return error
    return type(error)(f"{error} {hint}")


def negative_hint() -> str:
    return (
        "The seed trained on it, and a negative loss drives its σ to 0 and the total to -inf. To get that "
        "back at your own risk, set `awl.check_finite = False` (it skips every value check)."
    )


def check_seed_sigma(sigma: Any, key: str) -> None:
    """Refuse a seed checkpoint's σ that is 0 or not finite: its weight 1/(2σ²) would be infinite."""
    if not isinstance(sigma, Tensor) or sigma.device.type == "meta":
        return
    bad = (sigma == 0) | ~torch.isfinite(sigma)
    if bool(bad.any()):
        tasks = bad.reshape(-1).nonzero().reshape(-1).tolist()
        raise ValueError(
            f"Checkpoint key `{key}` (the seed's σ) is {sigma.tolist()}: σ is 0 or not finite for task(s) "
            f"{tasks}, the seed's collapse (its issue #2, a loss that stayed at 0). Its weight 1/(2σ²) is "
            "infinite, so the first call would return inf. Reset those entries to the seed's init before "
            f"loading, e.g. `sigma = state['{key}']; sigma[(sigma == 0) | ~sigma.isfinite()] = 1.0`, or drop the key to "
            "start from σ = 1."
        )


def seed_objective(params: Tensor, losses: Tensor, task_types: Sequence[str], mask: bool) -> tuple[Tensor, Tensor]:
    """The seed's loop, term for term, so that values and gradients match it bit for bit: the σ's stay
    where and as they are (0-dim tensors, no dtype promotion), also when the losses are elsewhere."""
    p = params.to(losses.device) if mask and params.device != losses.device else params
    total: Tensor | int = 0
    weights = []
    for i in range(losses.shape[0]):
        pi, num = p[i], 0.5 if task_types[i] == "regression" else 1.0
        if mask:  # not the seed: a task whose loss is exactly 0 keeps its σ
            active = losses[i] != 0
            pi_data = torch.where(active, pi, pi.detach())
            reg = torch.where(active, torch.log(1 + pi**2), torch.zeros_like(pi))
        else:
            pi_data, reg = pi, torch.log(1 + pi**2)
        w = num / (pi_data**2)
        weights.append(w)
        total = total + (w * losses[i] + reg)
    assert isinstance(total, Tensor)
    w_all = torch.stack(weights).detach()
    return total, (w_all if w_all.device == losses.device else w_all.to(losses.device))


def convert_state(state_dict: dict[str, Any], prefix: str, parameterization: str) -> None:
    """Convert a checkpoint between σ (key ``params``, the seed's) and log σ² (``log_var``), in place,
    with a warning about the optimizer state; refuse σ = 0 and non-finite values."""
    legacy, new = prefix + "params", prefix + "log_var"
    if legacy in state_dict:
        check_seed_sigma(state_dict[legacy], legacy)
    if parameterization == "log_variance" and legacy in state_dict and new not in state_dict:
        state_dict[new] = torch.log(state_dict.pop(legacy).detach() ** 2)
        _warn_converted(legacy, new, "σ", "log σ²", parameterization, "sigma")
    elif parameterization == "sigma" and new in state_dict and legacy not in state_dict:
        s = state_dict.pop(new).detach()
        if s.device.type != "meta" and not bool(torch.isfinite(s).all()):
            raise ValueError(f"Checkpoint key `{new}` must be finite, got {s.tolist()}.")
        state_dict[legacy] = torch.exp(0.5 * s)
        _warn_converted(new, legacy, "log σ²", "σ", parameterization, "log_variance")


def _warn_converted(old_key: str, new_key: str, old: str, new: str, mode: str, other: str) -> None:
    warnings.warn(
        f"Converted checkpoint key `{old_key}` ({old}) into `{new_key}` ({new}) for parameterization={mode!r}. "
        "If you also restore an optimizer state saved with this checkpoint, its moments for this parameter "
        f"were computed for {old} and would now move {new}: reset that parameter's optimizer state (or build "
        f"a fresh optimizer), or construct `AutomaticWeightedLoss(..., parameterization={other!r})` to resume "
        "exactly.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
