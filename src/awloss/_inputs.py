"""Normalisation and validation of the losses handed to a weighting.

Every public entry point accepts the losses in any of these shapes and turns them into one 1-D tensor
``Tensor[T]`` (plus the task names when a mapping was given):

* varargs of scalars: ``w(l1, l2)``;
* one sequence: ``w([l1, l2])``;
* one 1-D tensor: ``w(torch.stack([l1, l2]))``;
* one mapping of names to scalars: ``w({"seg": l1, "depth": l2})``.

Python numbers are accepted when *all* losses are numbers (the seed's ``awl(1, 2)``). A number mixed
with tensors is refused: it carries no gradient, which is nearly always a ``.item()`` by mistake.
``None`` marks a task that is absent from this batch; it counts as a constant loss of 0.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["as_loss_vector", "check_positive", "check_int", "default_device"]


def default_device() -> torch.device:
    """Where a factory call without ``device=`` puts a tensor (``meta`` under ``with torch.device("meta")``).

    Constructors validate their arguments on the CPU (a meta tensor has no values to check) and then
    place the result here.
    """
    return torch.empty(0).device


def _label(i: int, names: Sequence[str] | None) -> str:
    return f"`{names[i]}`" if names is not None else f"`losses[{i}]`"


def _split(losses: tuple[Any, ...]) -> tuple[list[Any], list[str] | None]:
    """Return the raw per-task items and the names (when given as a mapping)."""
    if len(losses) == 0:
        raise ValueError("No losses given: call with at least one loss, e.g. `weighting(loss1, loss2)`.")
    if len(losses) == 1:
        (only,) = losses
        if isinstance(only, Mapping):
            if len(only) == 0:
                raise ValueError("Argument `losses` is an empty mapping: give at least one task loss.")
            for key in only:
                if not isinstance(key, str):
                    raise TypeError(f"Task names must be str, got key {key!r} of type {type(key).__name__}.")
            return list(only.values()), list(only.keys())
        if isinstance(only, Tensor) and only.dim() == 1:
            if only.numel() == 0:
                raise ValueError("Argument `losses` is an empty tensor: give at least one task loss.")
            return list(only.unbind(0)) if only.numel() > 1 else [only.reshape(())], None
        if isinstance(only, Tensor) and only.dim() > 1:
            raise ValueError(
                f"Argument `losses` must be scalars or a 1-D tensor of per-task losses, got a tensor of "
                f"shape {tuple(only.shape)}; reduce each task's loss to a scalar (e.g. `.mean()`) first."
            )
        if isinstance(only, Sequence) and not isinstance(only, (str, bytes)):
            if len(only) == 0:
                raise ValueError("Argument `losses` is an empty sequence: give at least one task loss.")
            return list(only), None
    return list(losses), None


def as_loss_vector(
    losses: tuple[Any, ...],
    *,
    num_tasks: int | None,
    task_names: Sequence[str] | None,
    device: torch.device | None = None,
    with_absent: bool = False,
) -> Any:
    """Turn the call's arguments into ``Tensor[T]``; return it and the names if a mapping was given.

    With ``with_absent=True`` also return the (host-side, sorted) tuple of the indices given as ``None``.

    Args:
        losses: the positional arguments of the call.
        num_tasks: the expected count, or ``None`` to accept any count.
        task_names: the names already known to the module; a mapping is reordered to follow them.
        device: where numbers-only calls are placed (the module's device).
    """
    if len(losses) == 1 and isinstance(losses[0], Tensor) and losses[0].dim() == 1 and losses[0].numel() > 1:
        vec = losses[0]  # fast path: already a vector
        names = None
        absent: tuple[int, ...] = ()
    else:
        items, names = _split(losses)
        if names is not None and task_names is not None:
            missing = [n for n in task_names if n not in names]
            unknown = [n for n in names if n not in task_names]
            if missing or unknown:
                raise ValueError(
                    f"Argument `losses` has task names {names}, expected {list(task_names)}"
                    + (f"; missing {missing} (pass None for a task absent from this batch)" if missing else "")
                    + (f"; unknown {unknown}" if unknown else "")
                    + "."
                )
            lookup = dict(zip(names, items))
            items, names = [lookup[n] for n in task_names], list(task_names)
        vec = _stack(items, names, device)
        absent = tuple(i for i, x in enumerate(items) if x is None) if with_absent else ()
    if num_tasks is not None and vec.shape[0] != num_tasks:
        raise ValueError(f"Expected {num_tasks} losses (parameter `num_tasks`), got {vec.shape[0]}.")
    if not vec.is_floating_point():
        raise TypeError(f"Losses must be floating point tensors, got dtype {vec.dtype}.")
    return (vec, names, absent) if with_absent else (vec, names)


def _stack(items: list[Any], names: Sequence[str] | None, device: torch.device | None) -> Tensor:
    tensors = [x for x in items if isinstance(x, Tensor)]
    for i, x in enumerate(items):
        if x is None or isinstance(x, Tensor):
            continue
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            raise TypeError(f"Loss {_label(i, names)} must be a scalar tensor or a number, got {type(x).__name__}.")
        if tensors:
            raise TypeError(
                f"Loss {_label(i, names)} is a Python number ({x!r}) while other losses are tensors; a number "
                "carries no gradient, so that task would not train the model (often a stray `.item()`). Pass "
                f"a tensor, e.g. `torch.tensor({x!r})`, or pass every loss as a number."
            )
    if not tensors:  # the seed's `awl(1, 2)`: all numbers (or absent)
        values = [0.0 if x is None else float(x) for x in items]
        return torch.tensor(values, dtype=torch.get_default_dtype(), device=device)
    ref = tensors[0]
    for i, x in enumerate(items):
        if isinstance(x, Tensor):
            if x.numel() != 1 or x.dim() > 1:
                raise ValueError(
                    f"Loss {_label(i, names)} must be a scalar tensor, got shape {tuple(x.shape)}; reduce it "
                    "(e.g. `.mean()`) before weighting."
                )
            if x.device != ref.device:
                raise ValueError(f"Loss {_label(i, names)} is on {x.device}, but the others are on {ref.device}.")
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        _warn_detached(items, names)
    dtype = ref.dtype
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        for t in dtypes:
            dtype = torch.promote_types(dtype, t)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    if len(tensors) == len(items) and len(dtypes) == 1 and dtype is ref.dtype and all(x.dim() == 0 for x in items):
        return torch.stack(items)  # the common case: scalar losses of one dtype, no copies
    zero = None
    out = []
    for x in items:
        if x is None:
            zero = ref.new_zeros((), dtype=dtype) if zero is None else zero
            out.append(zero)
        else:
            out.append((x if x.dim() == 0 else x.reshape(())).to(dtype))
    return torch.stack(out)


def _warn_detached(items: list[Any], names: Sequence[str] | None) -> None:
    """Warn about a tensor loss without grad among losses with grad: that task would not train the model."""
    for i, x in enumerate(items):
        if isinstance(x, Tensor) and not x.requires_grad:
            warnings.warn(
                f"Loss {_label(i, names)} does not require grad while other losses do, so it will not train the "
                "model (a `.detach()`, a `torch.no_grad()` block or a constant?). Pass None for a task absent "
                "from this batch.",
                UserWarning,
                stacklevel=6,  # the user's `weighting(...)` call
            )
            return


def check_positive(name: str, value: float, *, strict: bool = True) -> float:
    """Return ``float(value)`` or raise ``Parameter `name` must be > 0, got value.``"""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"Parameter `{name}` must be a number, got {value!r}.") from None
    bad = not (v > 0 if strict else v >= 0) or v != v or v == float("inf")
    if bad:
        raise ValueError(f"Parameter `{name}` must be {'>' if strict else '>='} 0 and finite, got {value!r}.")
    return v


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum``, else raise a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Parameter `{name}` must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"Parameter `{name}` must be >= {minimum}, got {value!r}.")
    return int(value)
