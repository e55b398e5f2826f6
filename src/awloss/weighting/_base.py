"""The loss-level base class: ``Weighting`` turns per-task losses into one scalar to ``.backward()``."""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import _checks
from .._inputs import as_loss_vector, check_int
from ..distributed import is_distributed, maybe_sync, sync_update_losses

__all__ = ["Weighting"]


class Weighting(nn.Module):
    """Base class of every loss-level method: ``losses[T] -> scalar``.

    A subclass implements :meth:`forward` on the normalised ``Tensor[T]`` of losses, returns a scalar
    and calls :meth:`_set_weights` with the coefficients ``w`` such that ``∂out/∂L_i = w_i``. The base
    class accepts varargs, a sequence, a 1-D tensor or a mapping of task names to losses; checks the
    count, shapes, device and finiteness; and records :attr:`weights` and :attr:`task_names`.

    Class attributes describe the method: ``name`` (registry key), ``aliases``, ``learnable`` (its
    parameters must be given to an optimizer, see :meth:`param_groups`), ``stateful`` (it keeps state
    across calls), ``requires_nonnegative`` (the losses must be ``>= 0``, e.g. when a log is taken) and
    ``permutation_equivariant`` (permuting the tasks permutes the weights; ``False`` for random methods).

    The input check (finite losses, ``>= 0`` where required) never stops the host in a training step:
    each call leaves its verdict as a flag on the device and the *next* call (or a read of
    :attr:`weights`, or :meth:`verify`) reads it and raises the same error, naming the task, one call
    late. Set ``check = "immediate"`` on an instance (or on the class) to raise within the call that
    saw the bad value (one host read per call: a ``cudaStreamSynchronize`` on a GPU), or
    ``check = False`` (or the older ``check_finite = False``) to skip the check.

    A task given as ``None`` is absent from the batch: it is left out of the method's normalisation and
    state, its weight is reported as 0, and the other tasks are weighed as if ``T - 1`` tasks were given.
    Methods without per-task state set ``absent_by_subset = True`` and simply run on the present losses;
    the others read :meth:`_present_mask` in ``forward``. (Under DDP a synchronised call averages each
    task's loss over the ranks where it is present, so every rank computes the same weights; a task is
    absent when it is ``None`` on every rank.)

    Under ``torch.distributed`` (DDP) the losses' values are averaged over the ranks before
    :meth:`forward`, so every rank computes the same weights and state; see
    :mod:`awloss.distributed` (attributes ``sync`` and ``process_group``).

    Args:
        num_tasks: number of tasks ``T >= 1``; ``None`` accepts any count (only for stateless methods).
        task_names: optional names of the tasks; they fix the order in which mappings are read.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = "weighting"
    learnable: ClassVar[bool] = False
    stateful: bool = False  # (an instance may differ from its class: STCH with warmup, FAMO with bounds)
    requires_nonnegative: bool = False
    permutation_equivariant: ClassVar[bool] = True
    absent_by_subset: ClassVar[bool] = False
    objective_params: ClassVar[tuple[str, ...]] = ()
    stale_check_every: ClassVar[int] = 100
    #: ``forward`` pushes its own value flag (see :meth:`_push_flag`): the base computes none in deferred mode.
    _fused_check: ClassVar[bool] = False
    check: bool | str = "deferred"
    check_finite: bool = True
    sync: bool | str = "auto"
    process_group: Any = None
    _absent: tuple[int, ...] = ()  # indices given as None in the current call (set per call)
    _warned_unsynced: bool  # flags set on an instance by awloss.distributed (absent until then)
    _awloss_state_broadcast: bool

    def __init__(self, num_tasks: int | None = None, *, task_names: Sequence[str] | None = None) -> None:
        super().__init__()
        if task_names is not None:
            task_names = tuple(task_names)
            if not all(isinstance(n, str) for n in task_names) or len(set(task_names)) != len(task_names):
                raise ValueError(f"Parameter `task_names` must be distinct strings, got {list(task_names)!r}.")
            if num_tasks is None:
                num_tasks = len(task_names)
            elif len(task_names) != num_tasks:
                raise ValueError(
                    f"Parameter `task_names` has {len(task_names)} names but `num_tasks` is {num_tasks}."
                )
        self.num_tasks: int | None = None if num_tasks is None else check_int("num_tasks", num_tasks)
        self._task_names: tuple[str, ...] | None = task_names
        self._weights: Tensor | None = None
        self._calls = 0
        self._snapshot: tuple[Tensor, Tensor] | None = None
        self._warned_stale = False
        self._all_positive = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.objective_params and "get_extra_state" not in cls.__dict__:
            # The hyper-parameters that give the state its meaning travel in `state_dict()["_extra_state"]`.
            # (setattr: nn.Module types these hooks for any Module; ours take a Weighting)
            setattr(cls, "get_extra_state", Weighting._get_objective_state)
            setattr(cls, "set_extra_state", Weighting._set_objective_state)
        update = cls.__dict__.get("update")
        if update is not None and not getattr(update, "_awloss_synced", False):
            # Under DDP, `update(new_losses)` sees the losses averaged over the ranks, like `__call__`.
            @functools.wraps(update)
            def synced_update(self: Weighting, *losses: Any) -> Any:
                return update(self, *sync_update_losses(self, losses))

            synced_update._awloss_synced = True  # type: ignore[attr-defined]
            cls.update = synced_update  # type: ignore[method-assign]

    # ------------------------------------------------------------------ call
    def __call__(self, *losses: Any) -> Tensor:
        """Weigh ``losses`` (varargs, a sequence, a 1-D tensor or a mapping) into one scalar."""
        vec = self._loss_vector(losses, fused=self._fused_check, poll=True)
        out = super().__call__(vec) if not self._absent else self._call_with_absent(vec)
        if self.learnable and self.training and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            self._watch_parameters(vec)
        return out

    def _loss_vector(
        self, losses: tuple[Any, ...], *, sync: bool = True, fused: bool = False, poll: bool = False
    ) -> Tensor:
        """Normalise and check the call's arguments into ``Tensor[T]``, averaged over the ranks under DDP.

        (``update(*losses)`` of a subclass receives losses already averaged over the ranks.) Under DDP an
        error of this rank's checks is raised after the all-reduce, on every rank (:mod:`awloss.distributed`);
        so is an earlier call's failed deferred check (``poll``: read here, inside the local step).
        ``fused``: ``forward`` pushes its own value flag in deferred mode. Under DDP the value check is
        immediate: its verdict rides the header of the all-reduce, which the host reads anyway.
        """
        local: Callable[[tuple[Any, ...]], Tensor]
        if sync and is_distributed(self.process_group):
            local = functools.partial(self._local_loss_vector, poll=poll, immediate=True)
        elif not fused and not poll:
            local = self._local_loss_vector
        else:
            local = functools.partial(self._local_loss_vector, fused=fused, poll=poll)
        if not sync:
            return local(losses)
        return maybe_sync(self, local, losses)  # synced: `_absent` = the tasks absent on every rank

    def _local_loss_vector(
        self, losses: tuple[Any, ...], *, fused: bool = False, poll: bool = False, immediate: bool = False
    ) -> Tensor:
        """This rank's losses as ``Tensor[T]``, checked (count, names, device, values).

        Under DDP this runs inside the synchronised call's guard: whatever raises here (a check, or a
        deferred check's report polled here) is raised after the all-reduce on every rank. A check that
        raises *outside* it (before ``maybe_sync``) raises on one rank and leaves the others waiting.
        """
        if poll and not torch.compiler.is_compiling():
            _checks.poll(self)  # the flags of the earlier calls (a host read of values that are ready)
        device = self._device()
        vec: Tensor
        vec, names, absent = as_loss_vector(
            losses, num_tasks=self.num_tasks, task_names=self._task_names, device=device, with_absent=True
        )
        if names is not None and self._task_names is None:
            self._task_names = tuple(names)
        self._check_device(vec, device)
        self.__dict__["_absent"] = absent
        self.__dict__["_all_positive"] = False  # set by `_check_values` when it proves every loss > 0
        self._check_input(vec, fused=fused and not absent, immediate=immediate)
        return vec

    def _check_input(self, vec: Tensor, *, fused: bool = False, immediate: bool = False) -> None:
        """Check ``vec``: at once ("immediate"), or as a device flag read at the next call ("deferred").

        An absent task (``None``) passes every check; a present loss is checked under its own label.
        """
        if torch.compiler.is_compiling():
            return
        mode = _checks.check_mode(self) if self.check_finite else None
        if mode is not None and self._absent:
            vec = vec.detach().index_fill(0, self._absent_index(vec), 1.0)
        if mode == "immediate" or (mode is not None and immediate):
            self._check_values(vec)
            if self._absent:
                self.__dict__["_all_positive"] = False  # the absent slots hold 0
        elif mode is not None and not fused:
            d = vec.detach()
            absent = self._absent
            _checks.push(self, self._value_flag(d), lambda m: m._report_values(d, absent), mode)

    def _report_values(self, d: Tensor, absent: tuple[int, ...]) -> None:
        """A failed deferred check's report: ``_check_values`` with the absent tasks of the call that pushed it."""
        now = self.__dict__.get("_absent", ())
        self.__dict__["_absent"] = absent
        try:
            self._check_values(d)
        finally:
            self.__dict__["_absent"] = now

    def _push_flag(self, flag: Tensor, vec: Tensor) -> None:
        """For ``_fused_check`` methods: ``flag`` (e.g. the objective: NaN/inf for a bad loss) vouches for ``vec``."""
        if (
            self.check_finite
            and not torch.compiler.is_compiling()
            and _checks.check_mode(self) == "deferred"
            and not is_distributed(self.process_group)  # under DDP the base checked at once
            and not self._absent  # with a task absent the base checked (the absent slots filled)
        ):
            d = vec.detach()
            _checks.push(self, flag, lambda m: m._check_values(d), "deferred")

    def verify(self) -> None:
        """Raise now if a check of an earlier call failed (waits for the device; see ``check``)."""
        _checks.poll(self, wait=True)

    # ------------------------------------------------------ absent tasks
    def _absent_index(self, vec: Tensor) -> Tensor:
        """The indices of the tasks given as ``None`` in this call, as a tensor on ``vec``'s device."""
        return torch.tensor(self._absent, dtype=torch.long, device=vec.device)

    def _present_mask(self, vec: Tensor) -> Tensor | None:
        """``Tensor[T]`` of bools, ``False`` for a task given as ``None``; ``None`` when every task is present."""
        if not self._absent:
            return None
        return torch.ones(vec.shape[0], dtype=torch.bool, device=vec.device).index_fill_(
            0, self._absent_index(vec), False
        )

    def _call_with_absent(self, vec: Tensor) -> Tensor:
        """Weigh a call with tasks given as ``None``: they are left out, their weight reported as 0.

        A method with ``absent_by_subset = True`` (no per-task state or parameters) simply runs on the
        present losses; the others read :meth:`_present_mask` in ``forward`` to leave the absent tasks out
        of their normalisation and state. The absent slots of ``vec`` hold a constant 0.
        """
        T = vec.shape[0]
        if len(self._absent) == T:  # nothing to weigh: a constant 0, no state touched
            self._set_weights(torch.zeros_like(vec))
            return vec.sum()
        if self.absent_by_subset:
            absent = set(self._absent)
            idx = torch.tensor([i for i in range(T) if i not in absent], dtype=torch.long, device=vec.device)
            out: Tensor = nn.Module.__call__(self, vec.index_select(0, idx))
            w = self._weights  # (not `.weights`: it polls the deferred checks, a host read)
            assert w is not None  # (set by forward)
            self._set_weights(w.new_zeros(T).index_copy_(0, idx, w))
            return out
        out = nn.Module.__call__(self, vec)
        w = self._weights
        assert w is not None  # (set by forward)
        if w.shape[0] == T:  # (AutomaticWeightedLoss's seed mode reports only the k losses it was given)
            self._set_weights(w.index_fill(0, self._absent_index(vec), 0.0))
        return out

    def forward(self, losses: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Return the scalar objective for ``losses`` (``Tensor[T]``); call ``self._set_weights``."""
        raise NotImplementedError

    # ------------------------------------------------------------ reporting
    @property
    def weights(self) -> Tensor:
        """Detached ``Tensor[T]``: the coefficients of the last call, ``∂out/∂L_i``.

        Reading it first raises the error of a failed deferred check of an earlier call, if any.
        """
        _checks.poll(self)
        if self._weights is None:
            initial = self._initial_weights()
            if initial is None:
                raise RuntimeError(f"{type(self).__name__}.weights is known only after the first call.")
            return initial
        return self._weights

    @property
    def task_names(self) -> tuple[str, ...] | None:
        """The task names, from the constructor or the first mapping seen; ``None`` if never named."""
        return self._task_names

    def weights_dict(self) -> dict[str, float]:
        """``{task name or index: weight}`` as Python floats, for logging (synchronises the device)."""
        w = self.weights.tolist()
        names = self._task_names or tuple(str(i) for i in range(len(w)))
        return dict(zip(names, w))

    def _set_weights(self, weights: Tensor) -> None:
        if weights.requires_grad:
            weights = weights.detach()
        self.__dict__["_weights"] = weights  # a plain attribute: skip nn.Module.__setattr__ (hot path)

    def _initial_weights(self) -> Tensor | None:
        return None

    # ------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Restore the state right after construction (parameters, buffers, recorded weights)."""
        self._weights = None
        self._calls = 0
        self._snapshot = None
        self._warned_stale = False
        _checks.clear(self)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise parameters and buffers; stateful subclasses override this."""

    def step(self) -> None:
        """End-of-epoch hook (e.g. DWA); a no-op for most methods."""

    def update(self, *losses: Any) -> None:
        """After-``optimizer.step()`` hook (e.g. FAMO); a no-op for most methods.

        Under ``torch.distributed`` a method's ``update`` is a **collective** (its losses are averaged over
        the ranks): call it on every rank, never under ``if rank == 0:`` (that is detected and raises
        :class:`~awloss.distributed.RankMismatchError` on every rank, see :mod:`awloss.distributed`).
        """

    def param_groups(self, lr: float = 0.025, weight_decay: float = 0.0, **options: Any) -> list[dict[str, Any]]:
        """Optimizer parameter groups for this method's own parameters (empty if it has none).

        Weighting parameters move at most ``lr`` per Adam step, so they need their own, larger learning
        rate than the network (Nash-MTL's code uses 0.025) and no weight decay, which would pull them
        toward an arbitrary point.

        Example:
            >>> import torch, awloss
            >>> model = torch.nn.Linear(3, 2)
            >>> awl = awloss.AutomaticWeightedLoss(2)
            >>> opt = torch.optim.Adam([{"params": model.parameters()}, *awl.param_groups(lr=0.025)], lr=1e-3)
            >>> [g["lr"] for g in opt.param_groups]
            [0.001, 0.025]
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return []
        return [{"params": params, "lr": lr, "weight_decay": weight_decay, **options}]

    # ------------------------------------------------------------ checks
    def _device(self) -> torch.device | None:
        for t in self.parameters():
            return t.device
        for b in self.buffers():
            if b.is_floating_point():  # not e.g. RLW's generator state, which stays on the CPU
                return b.device
        return None

    def _check_device(self, vec: Tensor, dev: torch.device | None) -> None:
        if dev is not None and dev != vec.device:
            raise ValueError(
                f"Losses are on {vec.device} but {type(self).__name__}'s parameters are on {dev}; "
                f"move the module first, e.g. `{type(self).__name__.lower()}.to({str(vec.device)!r})`."
            )

    def _value_flag(self, d: Tensor) -> Tensor:
        """The deferred check: a 0-dim float tensor, finite when ``_check_values(d)`` would pass (when it
        is not, ``_check_values`` decides: a sum can overflow). One or two ops, no host read."""
        if self.requires_nonnegative:  # sqrt: NaN for a negative loss; the sum: NaN/inf for any non-finite
            return torch.sqrt(d).sum()
        return d.sum()

    def _check_values(self, vec: Tensor) -> None:
        # The immediate check (and the report of a failed deferred one). Cheap path first (one reduction, host reads of its result); only on failure is the culprit looked
        # for. A NaN/inf makes the sum non-finite.
        d = vec.detach()
        if self.requires_nonnegative:  # one reduction: NaN propagates into both, -inf/negatives fail `lo >= 0`
            lo, hi = torch.aminmax(d)
            low = float(lo)
            ok = low >= 0 and math.isfinite(float(hi))
            self.__dict__["_all_positive"] = ok and low > 0  # lets a method skip its zero-loss handling
        else:
            ok = math.isfinite(float(d.sum()))
        if ok:
            return
        values = d.tolist()
        names = self._task_names
        for i, v in enumerate(values):
            label = f"`{names[i]}`" if names else f"`losses[{i}]`"
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError(f"Loss {label} must be finite, got {v}.")
            if self.requires_nonnegative and v < 0:
                raise ValueError(
                    f"Loss {label} must be >= 0 for {type(self).__name__}, got {v}; shift or clamp the loss "
                    "(the method takes its log or treats it as a negative log-likelihood)."
                )

    def _watch_parameters(self, vec: Tensor) -> None:
        """Warn once if the learnable parameters never change while the losses do (not in an optimizer)."""
        self.__dict__["_calls"] = self._calls + 1  # hot path: skip nn.Module.__setattr__
        if self._warned_stale or self._calls % self.stale_check_every not in (0, 1):
            return
        params = [p.detach().reshape(-1) for p in self.parameters()]
        if not params:
            return
        flat, losses = torch.cat(params), vec.detach()
        if self._snapshot is None or self._calls % self.stale_check_every == 1:
            self._snapshot = (flat.clone(), losses.clone())
            return
        old_p, old_l = self._snapshot
        # On the device, read with the deferred checks (at the next call): the step never waits for it.
        fine = (flat != old_p).any() | (losses == old_l).all()
        _checks.push(self, fine, _warn_stale, "deferred")
        self._snapshot = None

    # ------------------------------------------------------------ checkpoints
    def _objective(self) -> dict[str, Any]:
        """``{name: value}`` of the hyper-parameters listed in ``objective_params``, as JSON-able values."""
        out: dict[str, Any] = {}
        for name in self.objective_params:
            v = getattr(self, name)
            out[name] = v.detach().cpu().tolist() if isinstance(v, Tensor) else list(v) if isinstance(v, tuple) else v
        return out

    def _get_objective_state(self) -> Tensor:
        """``get_extra_state`` of the methods declaring ``objective_params``: their values, JSON in a uint8
        tensor (a tensor so that every ``state_dict`` consumer, broadcasts included, handles it)."""
        data = json.dumps(self._objective(), sort_keys=True).encode()
        dev = self._device()
        return torch.tensor(list(data), dtype=torch.uint8, device=dev if dev is not None else "cpu")

    def _set_objective_state(self, state: Any) -> None:
        """Refuse a checkpoint saved with other objective-defining hyper-parameters (its state would mean
        something else here: e.g. UW's log-variances under "log" vs "log1p")."""
        if isinstance(state, Tensor):
            state = json.loads(bytes(state.detach().cpu().tolist()).decode())
        if not isinstance(state, dict):
            return
        mine = self._objective()
        for name, saved in state.items():
            if name in mine and mine[name] != saved:
                cls = type(self).__name__
                raise ValueError(
                    f"This checkpoint of {cls} was saved with `{name}`={saved!r}, but this {cls} has "
                    f"`{name}`={mine[name]!r}: its state would define a different objective. Build the module "
                    f"with `{name}={saved!r}`, or drop the key '_extra_state' from the state dict to load the "
                    "state anyway."
                )

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "_extra_state"
        if self.objective_params and key not in state_dict:  # a checkpoint without it (older release): load
            state_dict[key] = self._objective()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def _make_example(cls, num_tasks: int) -> Weighting:
        """An instance for ``num_tasks`` tasks with default arguments (used by the contract tests)."""
        return cls(num_tasks=num_tasks)


def _constant_weights(w: Weighting, losses: Tensor, value: float) -> Tensor:
    """``full_like(losses, value)``, made once per shape, dtype and device (no op per call)."""
    cached = w.__dict__.get("_const_weights")
    if cached is None or cached.shape != losses.shape or cached.dtype != losses.dtype or cached.device != losses.device:
        cached = w.__dict__["_const_weights"] = torch.full_like(losses, value, requires_grad=False)
    return cached


def _warn_stale(w: Weighting) -> None:
    if w._warned_stale:
        return
    w._warned_stale = True
    warnings.warn(
        f"{type(w).__name__}'s parameters have not changed over {w.stale_check_every - 1} calls "
        "while the losses varied: they are probably not in any optimizer. Add them, e.g. "
        "`torch.optim.Adam([{'params': model.parameters()}, *weighting.param_groups(lr=0.025)])`.",
        RuntimeWarning,
        stacklevel=4,
    )
