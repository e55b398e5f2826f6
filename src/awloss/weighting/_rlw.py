"""``RLW``: Random Loss Weighting (Lin et al., TMLR 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._registry import register
from ._base import Weighting

__all__ = ["RLW"]


@register
class RLW(Weighting):
    r"""Random loss weighting: fresh random weights on the simplex at every call.

    Each call draws :math:`T` standard normals and takes their softmax, so the weights are positive,
    sum to 1 and have mean :math:`1/T` each. Random weighting escapes a fixed compromise between tasks
    at no cost. The draws come from the module's own generator (on the CPU; :math:`T` numbers per call),
    whose state is saved in ``state_dict``: a checkpoint resumes with the identical next weights, and
    ``reset()`` replays the sequence from the start.

    .. math::

        \lambda = \operatorname{softmax}(z), \quad z \sim \mathcal N(0, I_T), \qquad
        \mathcal{L} = \sum_i \lambda_i L_i

    where:

    - :math:`z` is drawn anew at every call in ``train()`` mode;
    - in ``eval()`` mode the weights are :math:`1/T` (the mean of the distribution), so validation
      losses are comparable across calls.

    Args:
        num_tasks: number of tasks, ``>= 1``.
        seed: seed of the module's generator; ``None`` (default) draws one from torch's global generator,
            so ``torch.manual_seed`` makes runs reproducible.
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> rlw = awloss.RLW(3, seed=0)
        >>> total = rlw(torch.tensor([1.0, 2.0, 3.0]))
        >>> rlw.weights
        tensor([0.8446, 0.1349, 0.0205])
        >>> round(float(rlw.weights.sum()), 6)
        1.0

    References:
        B. Lin, F. Ye, Y. Zhang, I. W. Tsang, Reasonable Effectiveness of Random Weighting: A Litmus Test
        for Multi-Task Learning, TMLR 2022, https://arxiv.org/abs/2111.10603 (Sec. 3, the normal
        distribution with softmax normalisation).

    Note:
        LibMTL draws from torch's global generator (not resumable, and it perturbs the user's random
        stream); we use a private, checkpointed generator. Uniform weights in ``eval()`` mode are ours.
    """

    name = "rlw"
    aliases = ("random", "random_weighting")
    stateful = True
    permutation_equivariant = False  # random weights per call
    rng_state: Tensor  # buffer: the generator state (saved in state_dict)

    def __init__(self, num_tasks: int, *, seed: int | None = None, task_names: Sequence[str] | None = None) -> None:
        super().__init__(num_tasks, task_names=task_names)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), device="cpu").item())
        elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Parameter `seed` must be a non-negative int or None, got {seed!r}.")
        self.seed = seed
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(seed)
        # The generator state lives here when state_dict() is taken (see _save_to_state_dict).
        self.register_buffer("rng_state", self._generator.get_state())

    def reset_parameters(self) -> None:
        self._generator.manual_seed(self.seed)
        self.rng_state = self._generator.get_state().to(self.rng_state.device)

    def _initial_weights(self) -> Tensor:
        assert self.num_tasks is not None
        return torch.full((self.num_tasks,), 1.0 / self.num_tasks)

    def forward(self, losses: Tensor) -> Tensor:
        T = losses.shape[0]
        absent = self._absent  # a task given as None: left out of the softmax (T normals are still drawn)
        if self.training:
            z = torch.randn(T, generator=self._generator)
            if absent:
                z[list(absent)] = float("-inf")
            w = torch.softmax(z, dim=0).to(device=losses.device, dtype=losses.dtype, non_blocking=True)
        elif absent:
            w = torch.full_like(losses, 1.0 / (T - len(absent))).index_fill_(0, self._absent_index(losses), 0.0)
        else:
            w = torch.full_like(losses, 1.0 / T)
        self._set_weights(w)
        return torch.dot(w, losses)

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        self.rng_state = self._generator.get_state().to(self.rng_state.device)
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        key = prefix + "rng_state"
        if key in state_dict:
            self._generator.set_state(state_dict[key].detach().to("cpu", torch.uint8))

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, seed={self.seed}"
