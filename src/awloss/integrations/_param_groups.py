"""A weighting's parameters in an optimizer group of their own (own LR, no weight decay): shared by the trainers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["optimizers_in", "give_own_group"]


def optimizers_in(obj: Any) -> Iterator[torch.optim.Optimizer]:
    """Every optimizer inside ``obj`` (an optimizer, a wrapper with ``.optimizer``, or nested lists/dicts)."""
    if isinstance(obj, torch.optim.Optimizer):
        yield obj
    elif hasattr(obj, "optimizer") and isinstance(obj.optimizer, torch.optim.Optimizer):  # Lightning/accelerate wrappers
        yield obj.optimizer
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from optimizers_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from optimizers_in(v)


def give_own_group(opt: torch.optim.Optimizer, params: list[nn.Parameter], lr: float) -> None:
    """Put ``params`` in one group of their own in ``opt`` (``lr``, no weight decay), unless they already are.

    Parameters found in another group are moved out of it (the new group copies that group's other options);
    parameters the optimizer lacks are added. A group holding only ``params`` is left as the user made it, and so
    is an optimizer that already stepped them (e.g. restored from a checkpoint).
    """
    ids = {id(p) for p in params}
    if not ids:
        return
    own = [g for g in opt.param_groups if g["params"] and all(id(p) in ids for p in g["params"])]
    if {id(p) for g in own for p in g["params"]} == ids:
        return  # the user gave them their own group(s): respect that
    template: dict[str, Any] = {}
    for group in opt.param_groups:
        if any(id(p) in ids for p in group["params"]):
            if any(opt.state.get(p) for p in group["params"] if id(p) in ids):
                return  # already stepped (e.g. restored): leave the optimizer alone
            template = {k: v for k, v in group.items() if k != "params"}
            group["params"] = [p for p in group["params"] if id(p) not in ids]
    opt.param_groups[:] = [g for g in opt.param_groups if g["params"]]
    new = {**template, "params": list(params), "lr": lr, "weight_decay": 0.0}
    if "initial_lr" in template:
        new["initial_lr"] = lr
    opt.add_param_group(new)
