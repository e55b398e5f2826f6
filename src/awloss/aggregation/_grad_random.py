"""GradRandom: random simplex weights on the task gradients (random weighting at the gradient level)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._registry import register
from ._base import GramianAggregator

__all__ = ["GradRandom"]


@register
class GradRandom(GramianAggregator):
    r"""Random weights on the simplex for the task gradients, drawn afresh at every call.

    The gradient-level form of random loss weighting (``rlw``): each call draws :math:`T` standard normals
    and combines the gradients with their softmax. A cheap control for the adaptive aggregators: if a
    method does not beat random weights, its adaptivity is not what helps.

    .. math::
        w = \operatorname{softmax}(z),\quad z \sim \mathcal N(0, I_T), \qquad d = \sum_i w_i g_i

    where:
        - :math:`z` is drawn in the Jacobian's dtype (float32 for half types) on the CPU and moved to the
          Jacobian's device (``T`` numbers, no host read);
        - a task whose gradient is exactly 0 (absent from the batch) gets weight 0, and the present tasks
          take the first draws in order: the weights are those of the present tasks alone (for ``T < 16``,
          where torch draws the numbers one by one).

    Args:
        seed: ``None`` (default) draws from torch's global CPU generator, so ``torch.manual_seed`` makes runs
            reproducible and the draws equal TorchJD's ``Random`` on the CPU; an int ``>= 0`` gives the
            module its own generator, whose state is saved in ``state_dict`` and replayed by ``reset()``.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("grad_random", seed=0)
        >>> agg(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        tensor([0.8623, 0.1377])
        >>> agg.weights.sum()
        tensor(1.)

    References:
        Lin, Ye, Zhang & Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
        Learning", TMLR 2022, https://arxiv.org/abs/2111.10603 (Algorithm 2).

    Note:
        TorchJD draws on the Jacobian's device, so on a GPU its stream differs from the CPU one; we always
        draw on the CPU (the same numbers on every device). Weight 0 for absent tasks is ours: TorchJD's
        softmax gives them a share, which wastes part of the step.
    """

    name = "grad_random"
    aliases = ("grad_rlw",)
    stateful = False  # by default it draws from the global generator, like PCGrad; a seeded one keeps rng_state
    permutation_equivariant = False  # one draw per position
    rng_state: Tensor  # buffer of a seeded instance: the generator state (saved in state_dict)

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"Parameter `seed` must be a non-negative int or None, got {seed!r}.")
        self.seed = seed
        self._generator: torch.Generator | None = None
        if seed is not None:
            self._generator = torch.Generator(device="cpu")
            self._generator.manual_seed(seed)
            self.register_buffer("rng_state", self._generator.get_state())

    def reset_parameters(self) -> None:
        if self._generator is not None and self.seed is not None:  # (a seeded instance: both set)
            self._generator.manual_seed(self.seed)
            self.rng_state = self._generator.get_state()

    masked_rows = True  # its draws are mapped onto the non-zero rows (below)

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T = gramian.shape[0]
        dtype = gramian.dtype if gramian.dtype in (torch.float32, torch.float64) else torch.float32
        z = torch.randn(T, generator=self._generator, dtype=dtype)
        z = z.to(device=gramian.device, dtype=gramian.dtype, non_blocking=True)
        present = gramian.diagonal() > 0
        rank = (present.cumsum(0) - 1).clamp_min(0)  # the k-th present task takes the k-th draw
        z = torch.where(present, z[rank], torch.full_like(z, float("-inf")))
        w = torch.softmax(z, dim=0)
        return torch.where(present, w, torch.zeros_like(w)).nan_to_num(0.0)  # all absent: 0

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        if self._generator is not None:
            self.rng_state = self._generator.get_state()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        key = prefix + "rng_state"
        if self._generator is not None and key in state_dict:
            self._generator.set_state(state_dict[key].detach().to("cpu", torch.uint8))

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
