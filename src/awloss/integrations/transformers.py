"""Hugging Face Transformers (``pip install 'awloss[transformers]'``): a multi-task ``Trainer``.

:class:`MultiTaskTrainer` is a ``transformers.Trainer`` whose training loss is a loss-level awloss
weighting of the task losses your model returns. Everything else is the ``Trainer`` you know::

    trainer = MultiTaskTrainer(
        model=model,                                   # forward(...) returns {"task_losses": {...}, ...}
        args=TrainingArguments(output_dir="out", logging_steps=10, weight_decay=0.01),
        train_dataset=train_set,
        weighting=awloss.UncertaintyWeighting(2, task_names=["cls", "reg"]),
    )
    trainer.train()                                    # or trainer.train(resume_from_checkpoint=True)

What it does:

* ``compute_loss`` reads the per-task losses from the model's output (``outputs["task_losses"]``, a mapping
  of task names to scalars, or a sequence) — override :meth:`MultiTaskTrainer.task_losses` for another
  layout — and returns ``weighting(losses)`` in training, ``Σ Lᵢ`` in evaluation (so evaluation losses of
  runs with different weightings compare, and evaluation never moves a stateful weighting).
* ``create_optimizer`` puts the weighting's parameters in a group of their own: ``lr = weighting_lr``
  (default 0.025, Nash-MTL's) and ``weight_decay = 0``. The Trainer's LR schedule scales that group too.
* Every logging step adds ``weight/<task>`` (and ``sigma/<task>`` when the method has σ) to the Trainer's
  logs, so they reach every ``report_to`` backend (TensorBoard, W&B, MLflow, …).
* Each checkpoint folder gets ``awloss_weighting.pt`` (the weighting's ``state_dict``); ``train(
  resume_from_checkpoint=...)`` loads it back before training resumes, so a resumed run continues with the
  same σ's / state. The weighting follows the model's device.

Gradient-level aggregation (``awloss.backward``) needs its own backward pass and is not wired into the
Trainer's loop; use it with accelerate or a plain loop (see the Examples page).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..weighting._base import Weighting
from ._param_groups import give_own_group
from .loggers import weighting_scalars

__all__ = ["MultiTaskTrainer", "WEIGHTING_FILE"]

WEIGHTING_FILE = "awloss_weighting.pt"


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ImportError(
            "awloss.integrations.transformers needs Hugging Face Transformers; install with: "
            "pip install 'awloss[transformers]'"
        ) from e
    return transformers


def __getattr__(name: str) -> Any:
    if name == "MultiTaskTrainer":  # built on first use so that importing this module needs no transformers
        cls = _build_trainer_class()
        globals()["MultiTaskTrainer"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build_trainer_class() -> type:
    hf = _require_transformers()

    class WeightingCallback(hf.TrainerCallback):  # type: ignore[misc, name-defined]
        """Clears the weighting's gradients after each optimizer step; saves its state with every checkpoint."""

        def __init__(self, trainer: Any) -> None:
            self.trainer = trainer

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # The Trainer calls model.zero_grad(), which does not reach a weighting outside the model: without
            # this its gradients would accumulate over every step.
            self.trainer.weighting.zero_grad(set_to_none=True)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isdir(folder) and self.trainer.is_world_process_zero():
                torch.save(self.trainer.weighting.state_dict(), os.path.join(folder, WEIGHTING_FILE))

    class MultiTaskTrainer(hf.Trainer):  # type: ignore[misc, name-defined]
        """A ``transformers.Trainer`` that weighs the model's task losses with an awloss weighting.

        Args:
            weighting: any loss-level method (:class:`awloss.Weighting`), e.g. ``awloss.get("uw", num_tasks=2)``.
            weighting_lr: learning rate of the weighting's own optimizer group, ``> 0``. Default 0.025.
            *args, **kwargs: passed to ``transformers.Trainer`` unchanged.
        """

        def __init__(self, *args: Any, weighting: Weighting, weighting_lr: float = 0.025, **kwargs: Any) -> None:
            if not isinstance(weighting, Weighting):
                raise TypeError(f"Argument `weighting` must be an awloss Weighting, got {type(weighting).__name__}.")
            if not weighting_lr > 0:
                raise ValueError(f"Parameter `weighting_lr` must be > 0, got {weighting_lr!r}.")
            super().__init__(*args, **kwargs)
            self.weighting = weighting.to(self.args.device)
            self.weighting_lr = float(weighting_lr)
            self.add_callback(WeightingCallback(self))

        # ------------------------------------------------------------- user hook
        def task_losses(self, model: nn.Module, inputs: Mapping[str, Any]) -> tuple[Any, Any]:
            """Run the model and return ``(task losses, outputs)``; the losses as a mapping or a sequence.

            The default reads ``outputs["task_losses"]``; override it for another output layout.
            """
            outputs = model(**inputs)
            losses = outputs.get("task_losses") if isinstance(outputs, Mapping) else getattr(outputs, "task_losses", None)
            if losses is None:
                raise KeyError(
                    f"{type(model).__name__}'s output has no `task_losses`: return {{'task_losses': {{name: loss}}}} "
                    "from forward, or override MultiTaskTrainer.task_losses(model, inputs)."
                )
            return losses, outputs

        # ------------------------------------------------------------- Trainer hooks
        def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            losses, outputs = self.task_losses(model, inputs)
            if model.training:
                self.weighting.to(next(iter(_tensors(losses))).device)
                total = self.weighting(losses)
            else:
                total = torch.stack([v for v in _tensors(losses)]).sum()
            return (total, outputs) if return_outputs else total

        def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
            opt = super().create_optimizer() if model is None else super().create_optimizer(model)
            params = [p for p in self.weighting.parameters() if p.requires_grad]
            give_own_group(self.optimizer, params, self.weighting_lr)
            return opt  # type: ignore[no-any-return]

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs:  # a training log: add the weights of the last step
                logs = {**logs, **weighting_scalars(self.weighting)}
            super().log(logs, *args, **kwargs)

        def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
            folder = resume_from_checkpoint
            if folder is True:
                folder = hf.trainer_utils.get_last_checkpoint(self.args.output_dir)
                if folder is None:
                    raise ValueError(f"No checkpoint found in output_dir {self.args.output_dir!r} to resume from.")
            if isinstance(folder, (str, os.PathLike)):
                path = os.path.join(folder, WEIGHTING_FILE)
                if not os.path.isfile(path):
                    raise FileNotFoundError(
                        f"Checkpoint {os.fspath(folder)!r} has no {WEIGHTING_FILE}: it was not written by "
                        "MultiTaskTrainer, so the weighting's state cannot be restored."
                    )
                self.weighting.load_state_dict(torch.load(path, map_location=self.args.device, weights_only=True))
            return super().train(resume_from_checkpoint, *args, **kwargs)

    MultiTaskTrainer.__module__ = __name__
    return MultiTaskTrainer


def _tensors(losses: Any) -> Iterable[Tensor]:
    values = losses.values() if isinstance(losses, Mapping) else losses
    return [v for v in values if v is not None]
