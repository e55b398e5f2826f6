"""``GradNorm``: gradient normalisation for adaptive loss balancing (Chen et al., ICML 2018)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import _checks
from .._inputs import check_positive
from .._registry import register
from ..distributed import _should_sync, all_reduce_mean, reject_sharded
from ._base import Weighting
from ._helpers import adam_step

__all__ = ["GradNorm"]


@register
class GradNorm(Weighting):
    r"""GradNorm: tune the task weights so that each task's gradient norm matches its training rate.

    At each training call the module measures :math:`G_i = \lVert\nabla_W w_iL_i\rVert` on the last
    shared layer :math:`W` (given to the constructor) with ``torch.autograd.grad``, which writes no
    ``.grad`` into the model, so nothing is counted twice. It moves :math:`w` one step of its own Adam
    on :math:`\sum_i |G_i - \bar G\, r_i^\alpha|` and renormalises to :math:`\sum_i w_i = T`. The loop stays
    ``total = gradnorm(losses); total.backward()``; the returned loss uses the weights before the update.

    .. math::

        \mathcal{L} = \sum_i w_i L_i, \qquad
        L_\text{grad} = \sum_i \big| G_i - \mathrm{sg}[\bar G\, r_i^{\alpha}] \big|, \qquad
        r_i = \frac{L_i(t)/L_i(0)}{\frac1T\sum_j L_j(t)/L_j(0)}

    where:

    - :math:`G_i = w_i\lVert\nabla_W L_i\rVert`, :math:`\bar G` their mean, :math:`L_i(0)` the first losses;
    - :math:`\alpha \ge 0` is the restoring force (0: equal gradient norms);
    - the update :math:`\partial L_\text{grad}/\partial w_i = \operatorname{sign}(G_i - \text{target}_i)
      \lVert\nabla_W L_i\rVert` is exact (no second-order graph is needed).

    Args:
        num_tasks: number of tasks, ``>= 1``.
        shared: the last shared layer: an ``nn.Module``, a parameter, or an iterable of parameters.
        alpha: :math:`\alpha \ge 0`. Default 1.5 (the paper's NYUv2 value).
        lr: learning rate of the weights' own Adam, ``> 0``. Default 0.025.
        task_names: optional task names.

    Example:
        >>> import torch, awloss
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> trunk, heads = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)
        >>> gn = awloss.GradNorm(2, shared=trunk)
        >>> out = heads(trunk(torch.randn(16, 4)))
        >>> total = gn(out[:, 0].pow(2).mean(), 100 * out[:, 1].pow(2).mean())
        >>> total.backward()
        >>> gn.weights.sum()  # the weights used for this step; the next ones are already updated
        tensor(2.)

    References:
        Z. Chen, V. Badrinarayanan, C.-Y. Lee, A. Rabinovich, GradNorm: Gradient Normalization for
        Adaptive Loss Balancing in Deep Multitask Networks, ICML 2018, https://arxiv.org/abs/1711.02257
        (Eqs. 1-2, Alg. 1).

    Note:
        The paper updates :math:`w` with the network's optimizer; we use a private Adam (state in
        buffers) so the user's optimizer never sees :math:`w`. SamsungLabs/MTL's per-task
        ``backward(retain_graph=True)`` adds every task's gradient into the model a second time;
        ``autograd.grad`` avoids that. Weights are clamped to stay > 0 before renormalising (the paper
        does not say what happens when one would become negative). Calls in ``eval()`` mode, without
        grad, or whose losses do not reach ``shared`` leave the weights unchanged (the latter warns once:
        a GradNorm deep-copied or pickled on its own holds copies of the layer, not the model's; copy it
        together with the model, whose copy it then measures, or rebuild it on the model's layer). Under
        DDP the per-task gradients on ``shared`` are averaged over the ranks before their norms are taken
        (one all-reduce of ``T x |W|`` numbers), so every rank computes the weights of the concatenated batch.
        Tasks absent (``None``), at loss 0 or without gradient on ``shared`` are left out of the means, the
        step and the renormalisation (their weight stays); L_i(0) is a task's first loss > 0.
    """

    name = "gradnorm"
    stateful = True
    requires_nonnegative = True
    objective_params = ("alpha",)  # a checkpoint saved with another alpha is refused on load
    task_weights: Tensor  # buffers (registered in __init__)
    initial_losses: Tensor
    has_initial: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    adam_step: Tensor
    grad_norms: Tensor
    targets: Tensor

    def __init__(
        self,
        num_tasks: int,
        shared: nn.Module | Tensor | Iterable[Tensor],
        *,
        alpha: float = 1.5,
        lr: float = 0.025,
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_tasks, task_names=task_names)
        T = self.num_tasks
        assert T is not None
        params = [shared] if isinstance(shared, Tensor) else list(
            shared.parameters() if isinstance(shared, nn.Module) else shared
        )
        if not params or not all(isinstance(p, Tensor) and p.requires_grad for p in params):
            raise ValueError(
                "Parameter `shared` must be the last shared layer (a module or parameters requiring grad), "
                f"got {shared!r}."
            )
        self._shared: list[Tensor] = params  # plain list: not registered, not in state_dict
        self.alpha = check_positive("alpha", alpha, strict=False)
        self.lr = check_positive("lr", lr)
        self.register_buffer("task_weights", torch.ones(T))
        self.register_buffer("initial_losses", torch.ones(T))
        self.register_buffer("has_initial", torch.zeros((), dtype=torch.bool))
        for name in ("exp_avg", "exp_avg_sq"):
            self.register_buffer(name, torch.zeros(T))
        self.register_buffer("adam_step", torch.zeros(()))
        self._count: int | None = 0  # host mirror of `adam_step` (None: read it after load_state_dict)
        self.register_buffer("grad_norms", torch.zeros(T), persistent=False)  # last G_i, for inspection
        self.register_buffer("targets", torch.zeros(T), persistent=False)  # last targets

    @classmethod
    def _make_example(cls, num_tasks: int) -> GradNorm:
        return cls(num_tasks, shared=nn.Linear(2, 2))

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._count = None
        super()._load_from_state_dict(*args, **kwargs)

    def reset_parameters(self) -> None:
        self._count = 0
        self.task_weights.fill_(1.0)
        self.initial_losses.fill_(1.0)
        for b in (self.has_initial, self.exp_avg, self.exp_avg_sq, self.adam_step, self.grad_norms, self.targets):
            b.zero_()

    def _initial_weights(self) -> Tensor:
        return self.task_weights.clone()

    def forward(self, losses: Tensor) -> Tensor:
        w = self.task_weights.to(torch.promote_types(losses.dtype, self.task_weights.dtype), copy=True)
        present = self._present_mask(losses)
        if present is not None:  # as if T - 1 tasks were given: the present weights sum to their count
            w = w * present
            w = w * (present.sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny))
        self._set_weights(w)
        out = torch.dot(w, losses.to(w.dtype))
        if self.training and torch.is_grad_enabled() and losses.requires_grad:
            self._update(losses, present)
        return out

    def _update(self, losses: Tensor, present: Tensor | None) -> None:
        reject_sharded(self._shared, "GradNorm's `shared` layer")  # FSDP2: autograd.grad of a shard is None
        T = losses.shape[0]
        synced = _should_sync(self)
        rows = []
        reached = False
        for i in range(T):
            grads = torch.autograd.grad(losses[i], self._shared, retain_graph=True, allow_unused=True)
            reached = reached or any(g is not None for g in grads)
            if synced:  # under DDP: the norm of the rank-averaged gradient, as one process would see it
                flat = [torch.zeros_like(p) if g is None else g for p, g in zip(self._shared, grads)]
                rows.append(torch.cat([g.reshape(-1) for g in flat]))
            else:
                per = [torch.linalg.vector_norm(g) for g in grads if g is not None]
                rows.append(torch.linalg.vector_norm(torch.stack(per)) if per else losses.new_zeros(()))
        if not reached and not self.__dict__.get("_warned_unreached"):
            self.__dict__["_warned_unreached"] = True
            warnings.warn(
                "GradNorm: no loss reaches the `shared` parameters, so the weights do not move. A GradNorm "
                "deep-copied or pickled on its own measures copies of the layer, not the model's: build it "
                "with the model's layer (`GradNorm(T, shared=model.encoder[-1])`) and load the copy's state_dict "
                "into it, or deep-copy it together with the model.",
                UserWarning,
                stacklevel=5,
            )
        with torch.no_grad():
            if synced:
                group = getattr(self, "process_group", None)
                n = torch.linalg.vector_norm(all_reduce_mean(torch.stack(rows), group), dim=1)
            else:
                n = torch.stack(rows)
            n = n.to(self.task_weights.dtype)
            L = losses.detach().to(self.task_weights.dtype)
            # L_i(0) is the first loss > 0 of task i (a task absent or at 0 in the first calls has no rate yet)
            L0 = self.initial_losses
            L0.copy_(torch.where(self.has_initial & (L0 > 0), L0, L if present is None else L * present))
            self.has_initial.fill_(True)
            # Tasks absent, at loss 0 or without gradient on `shared` are left out of the means, the step and
            # the renormalisation: their weight stays, and the others behave as if they were not there.
            active = (n > 0) & (L > 0) & (L0 > 0)
            if present is not None:
                active &= present
            if _checks.host_reads_are_free(L):  # CPU: stop here when no task is active (a free host read)
                if not bool(active.any()):
                    return
                moved = None
            else:  # an accelerator: no host read; the step runs and is undone below when no task is active
                # (the host's Adam step count still advances: the bias corrections of later steps see one more)
                moved = active.any()
                state = (self.task_weights, self.exp_avg, self.exp_avg_sq, self.grad_norms, self.targets)
                before = [t.clone() for t in state]
            k = active.sum().to(L.dtype)
            G = self.task_weights * n
            tiny = torch.finfo(L.dtype).tiny
            rate = torch.where(active, L / L0.clamp_min(tiny), torch.zeros_like(L))
            r = rate / (rate.sum() / k).clamp_min(tiny)
            target = torch.where(active, (G * active).sum() / k * r.pow(self.alpha), G)
            self.grad_norms.copy_(G)
            self.targets.copy_(target)
            grad = torch.sign(G - target) * n
            self._count = (int(self.adam_step) if self._count is None else self._count) + 1
            kept = [b.clone() for b in (self.task_weights, self.exp_avg, self.exp_avg_sq)]
            adam_step(self.task_weights, grad, self.exp_avg, self.exp_avg_sq, self.adam_step, self._count, lr=self.lr)
            for b, old in zip((self.task_weights, self.exp_avg, self.exp_avg_sq), kept):
                b.copy_(torch.where(active, b, old))
            w = self.task_weights.clamp_(min=1e-6)
            # Renormalise the active weights so that the total stays T, the inactive ones unchanged.
            rest = (w * ~active).sum()
            w.copy_(torch.where(active, w * ((T - rest).clamp_min(1e-6 * k) / (w * active).sum()), w))
            if moved is not None:  # no task active: every buffer as before (no host read)
                for t, old in zip(state, before):
                    torch.where(moved, t, old, out=t)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, alpha={self.alpha}, lr={self.lr}"
