"""Lightning integration (``pip install 'awloss[lightning]'``): a mixin for multi-task ``LightningModule``s.

Put :class:`MultiTaskMixin` before ``LightningModule``, give the module a loss-level ``weighting`` (any
:class:`~awloss.weighting.Weighting`) or a gradient-level ``aggregator``, and return the task losses
from :meth:`~MultiTaskMixin.task_losses`::

    class Model(MultiTaskMixin, L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = ...
            self.weighting = awloss.UncertaintyWeighting(2, task_names=["seg", "depth"])

        def task_losses(self, batch, batch_idx):
            return {"seg": ..., "depth": ...}

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

What the mixin does:

* ``training_step`` weighs the task losses and returns the scalar (automatic optimisation); with an
  ``aggregator`` it switches to manual optimisation and calls ``awloss.backward`` with
  :meth:`~MultiTaskMixin.shared_parameters`.
* The optimizers returned by ``configure_optimizers`` get the weighting's parameters in their own group
  (``lr = weighting_lr``, default 0.025, ``weight_decay = 0``): added if missing, split out of a group
  shared with the network. A group holding only the weighting's parameters is left as the user made it.
* Every step, ``weight/<task>`` (and ``sigma/<task>`` when the method has σ) are logged with
  ``self.log`` (the logger writes them every ``Trainer(log_every_n_steps=…)`` steps).
* Under ``strategy="ddp"`` the weighting syncs its losses across ranks by itself
  (:mod:`awloss.distributed`), so every rank logs and learns the same weights.
* Under ``strategy="fsdp"`` (FSDP1; Lightning refuses it without CUDA) an ``aggregator`` raises
  ``NotImplementedError`` (``awloss.backward`` cannot take per-task gradients of FSDP1's flat parameters).
  FSDP2 works, CPU included: ``strategy=ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1)``
  and a ``configure_model`` that calls ``fully_shard`` (a weighting, or an aggregator on the sharded trunk;
  tested on 2 CPU processes, equal to one process). Or use ``strategy="ddp"``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..weighting._base import Weighting
from ._param_groups import give_own_group, optimizers_in

__all__ = ["MultiTaskMixin"]


def _require_lightning() -> Any:
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError as e:
            raise ImportError(
                "awloss.integrations.lightning needs Lightning; install with: pip install 'awloss[lightning]'"
            ) from e
    return pl


class MultiTaskMixin:
    """Mixin for a ``LightningModule`` whose tasks' losses are weighted by awloss (see the module docs).

    Attributes:
        weighting_lr: learning rate of the weighting's own parameter group. Default 0.025 (Nash-MTL's).
        log_weights: log ``weight/<task>`` and ``sigma/<task>`` every step. Default ``True``.
    """

    weighting_lr: float = 0.025
    log_weights: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _require_lightning()
        user = cls.__dict__.get("configure_optimizers")
        if user is not None and not getattr(user, "_awloss_wrapped", False):

            @functools.wraps(user)
            def configure_optimizers(self: MultiTaskMixin) -> Any:
                out = user(self)
                self._awloss_fix_optimizers(out)
                return out

            configure_optimizers._awloss_wrapped = True  # type: ignore[attr-defined]
            cls.configure_optimizers = configure_optimizers  # type: ignore[attr-defined]

    # ------------------------------------------------------------- user hooks
    def task_losses(self, batch: Any, batch_idx: int) -> Mapping[str, Tensor] | Iterable[Tensor]:
        """Return the per-task losses of ``batch``: a mapping of task names to scalars, or a sequence."""
        raise NotImplementedError(f"{type(self).__name__} must define task_losses(batch, batch_idx).")

    def shared_parameters(self) -> Iterable[nn.Parameter]:
        """The parameters shared by all tasks (gradient-level aggregation only)."""
        raise NotImplementedError(
            f"{type(self).__name__} uses an aggregator: define shared_parameters() returning the parameters "
            "shared by all tasks (e.g. `return self.backbone.parameters()`)."
        )

    # ------------------------------------------------------------- plumbing
    def _awloss_weighting(self) -> Weighting | None:
        w = getattr(self, "weighting", None)
        if isinstance(w, Weighting):
            return w
        for m in self.modules():  # type: ignore[attr-defined]
            if isinstance(m, Weighting):
                return m
        return None

    def _awloss_aggregator(self) -> Any:
        return getattr(self, "aggregator", None)

    @property
    def automatic_optimization(self) -> bool:
        if self._awloss_aggregator() is not None:
            return False
        return getattr(self, "_automatic_optimization", True)

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = value

    def _awloss_fix_optimizers(self, configured: Any) -> None:
        w = self._awloss_weighting()
        if w is None:
            return
        params = [p for p in w.parameters() if p.requires_grad]
        for opt in optimizers_in(configured):
            give_own_group(opt, params, self.weighting_lr)

    def weigh(self, losses: Any) -> Tensor:
        """Weigh ``losses`` with the module's weighting and log the weights; returns the scalar to optimise."""
        w = self._awloss_weighting()
        if w is None:
            raise AttributeError(
                f"{type(self).__name__} has no awloss weighting: set e.g. "
                "`self.weighting = awloss.UncertaintyWeighting(num_tasks)` in __init__."
            )
        total = w(losses)
        self._awloss_log(w.weights, w.task_names, getattr(w, "sigma", None))
        return total

    def _awloss_log(self, weights: Tensor, names: Any, sigma: Any = None) -> None:
        if not self.log_weights:
            return
        names = list(names) if names is not None else [str(i) for i in range(len(weights))]
        for i, n in enumerate(names):
            self.log(f"weight/{n}", weights[i].float(), on_step=True, on_epoch=False, batch_size=1)  # type: ignore[attr-defined]
            if isinstance(sigma, Tensor):
                self.log(f"sigma/{n}", sigma[i].float(), on_step=True, on_epoch=False, batch_size=1)  # type: ignore[attr-defined]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        losses = self.task_losses(batch, batch_idx)
        aggregator = self._awloss_aggregator()
        if aggregator is None:
            total = self.weigh(losses)
            self.log("loss", total.detach(), on_step=True, on_epoch=False, batch_size=1)  # type: ignore[attr-defined]
            return total
        self._awloss_manual_step(losses, aggregator)
        return None

    def _awloss_manual_step(self, losses: Any, aggregator: Any) -> None:
        import awloss

        backward = getattr(awloss, "backward", None)
        if backward is None:
            raise RuntimeError("Gradient-level aggregation needs awloss.backward, which this awloss lacks.")
        if type(getattr(self.trainer, "strategy", None)).__name__ == "FSDPStrategy":  # type: ignore[attr-defined]
            from ..distributed import _FSDP1

            raise NotImplementedError(f"MultiTaskMixin with an `aggregator`: {_FSDP1}")
        names = list(losses) if isinstance(losses, Mapping) else None
        values = list(losses.values()) if isinstance(losses, Mapping) else list(losses)
        opt = self.optimizers()  # type: ignore[attr-defined]
        opt.zero_grad()
        # fp16 ("16-mixed"): the precision plugin's GradScaler, which opt.step() then steps and updates
        scaler = getattr(getattr(self.trainer, "precision_plugin", None), "scaler", None)  # type: ignore[attr-defined]
        weights = backward(values, list(self.shared_parameters()), aggregator, scaler=scaler)
        opt.step()
        if weights is not None:
            self._awloss_log(torch.as_tensor(weights).detach(), names)
        self.log("loss", torch.stack([v.detach() for v in values]).sum(), on_step=True, on_epoch=False, batch_size=1)  # type: ignore[attr-defined]
        return None
