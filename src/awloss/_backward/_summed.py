"""The summed engine: GradMean/GradSum need no per-task gradient, only one backward of ``ΣLᵢ``."""

from __future__ import annotations

import torch
from torch import Tensor

from ._engine import Jacobian, guarded, missing_params
from ._gather import Losses
from ._loop import LoopEngine, loop_backward


class SummedEngine(LoopEngine):
    """For aggregators declaring ``_uniform`` (update = c·∇ΣLᵢ, constant weights): one backward pass,
    whatever ``method``; the heads accumulate ``∇ΣLᵢ`` in the same pass, the unused parameters keep ``None``."""

    name = "summed"

    def jacobian(self, losses: Losses, retain_graph: bool) -> Jacobian:
        total: Tensor = torch.stack(losses.items).sum()
        flat, self.used = guarded(loop_backward, [total], self.shared, retain_graph, self.cache)
        if not any(self.used):
            raise missing_params()
        return Jacobian([flat[0]], summed=True, present=losses.present)
