"""The gradient-level base classes: ``Aggregator`` (``J[T, n] -> update[n]``) and ``GramianAggregator``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import _checks

__all__ = ["Aggregator", "GramianAggregator", "SolverError"]


class SolverError(RuntimeError):
    """An on-device solver did not meet its optimality test (raised, never swallowed)."""


class Aggregator(nn.Module):
    """Base class of every gradient-level method: a Jacobian ``J[T, n]`` (row ``i`` = ``∇L_i``) → ``update[n]``.

    A subclass implements :meth:`forward` on a validated 2-D floating-point ``J`` and returns the update;
    a weighted method (the update is ``wᵀJ``) records ``w`` with :meth:`_set_weights`, readable as
    :attr:`weights`. The base flattens trailing dimensions (``J[T, *shape]`` → ``update[*shape]``),
    checks that ``J`` is finite and that every on-device solver converged. The check never stops the host:
    its verdict stays on the device and the next call (or a read of :attr:`weights`, or :meth:`verify`)
    raises its error, one call late. ``check = "immediate"`` on an instance raises within the call (one
    host read per call); ``check = False`` skips the checks.

    Class attributes describe the method: ``name`` (registry key), ``aliases``, ``kind = "aggregator"``,
    ``stateful`` (it keeps state across calls in buffers, see :meth:`reset`), ``weighted`` (``False``
    for methods such as GradDrop whose update is not a combination of the rows),
    ``permutation_equivariant`` (``False`` when random draws depend on the task order) and
    ``conflict_free`` (the method guarantees ``⟨update, g_i⟩ >= 0`` for every task) and
    ``state_per_column`` (its state is indexed by the Jacobian's columns, e.g. DB-MTL's gradient average:
    every call must bring the same parameters, so :func:`awloss.backward` refuses ``representation=``).
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = "aggregator"
    stateful: ClassVar[bool] = False
    weighted: ClassVar[bool] = True
    permutation_equivariant: ClassVar[bool] = True
    conflict_free: ClassVar[bool] = False
    state_per_column: ClassVar[bool] = False
    check: bool | str = True  # True / "deferred" (default), "immediate" or False

    def __init__(self) -> None:
        super().__init__()
        self._weights: Tensor | None = None
        self._checks: list[tuple[Tensor, str]] = []

    # ------------------------------------------------------------------ call
    def __call__(self, jacobian: Tensor) -> Tensor:  # type: ignore[override]
        """Aggregate ``jacobian`` (``Tensor[T, ...]``, one row per task) into one update ``Tensor[...]``."""
        J = self._validate_jacobian(jacobian)
        with _checks.step(self):  # reads the earlier calls' flags (unless nested in awloss.backward)
            self._checks = []
            J2 = J.reshape(J.shape[0], -1)
            out = super().__call__(J2)
            self._run_checks(lambda: torch.isfinite(J2.sum(dim=1)))  # NaN/inf anywhere in a row shows in its sum
        return out.reshape(J.shape[1:])

    def forward(self, jacobian: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Return the update for the 2-D ``jacobian``; weighted methods call ``self._set_weights``."""
        raise NotImplementedError

    def transform_losses(self, losses: Tensor) -> Tensor:
        """Map the losses before differentiation (identity; DB-MTL takes their log). Used by :func:`awloss.backward`."""
        return losses

    def transform_items(self, items: list[Tensor]) -> list[Tensor]:
        """:meth:`transform_losses` applied to a list of scalar losses, keeping them separate."""
        if type(self).transform_losses is Aggregator.transform_losses:
            return items
        return [self.transform_losses(x) for x in items]

    # ------------------------------------------------------------ reporting
    @property
    def weights(self) -> Tensor:
        """Detached ``Tensor[T]``: the coefficients of the last call, ``update = weightsᵀJ``."""
        if not self.weighted:
            raise RuntimeError(f"{type(self).__name__} is not a weighted aggregator: its update is not wᵀJ.")
        _checks.poll(self)
        if self._weights is None:
            raise RuntimeError(f"{type(self).__name__}.weights is known only after the first call.")
        return self._weights

    def _set_weights(self, weights: Tensor) -> None:
        self._weights = weights.detach()

    def _expect(self, ok: Tensor, message: str) -> None:
        """Register a boolean tensor that must be true; checked once at the end of the call."""
        self._checks.append((ok, message))

    # ------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Restore the state right after construction (buffers, recorded weights)."""
        self._weights = None
        _checks.clear(self)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise buffers; stateful subclasses override this."""

    # A call counter for stateful methods: a ``step`` buffer (saved in ``state_dict``) mirrored by a host
    # int ``_step``, so the hot path never reads the device to know which call this is.
    def _init_step_counter(self) -> None:
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._step = 0

    def _advance_step(self) -> int:
        self._step += 1
        self.step.fill_(self._step)
        return self._step

    def _reset_step(self) -> None:
        self.step.zero_()
        self._step = 0

    # ------------------------------------------------------------ checks
    def _validate_jacobian(self, J: Any) -> Tensor:
        if not isinstance(J, Tensor):
            raise TypeError(f"Argument `jacobian` must be a Tensor[T, n], got {type(J).__name__}.")
        if J.dim() < 2:
            raise ValueError(
                f"Argument `jacobian` must have one row per task (shape [T, n]), got shape {tuple(J.shape)}."
            )
        if J.shape[0] == 0:
            raise ValueError("Argument `jacobian` has no rows: give at least one task gradient.")
        if not J.is_floating_point():
            raise TypeError(f"Argument `jacobian` must be floating point, got dtype {J.dtype}.")
        return J

    def verify(self) -> None:
        """Raise now if a check of an earlier call failed (waits for the device; see ``check``)."""
        _checks.poll(self, wait=True)

    def _run_checks(self, row_finite: Any) -> None:
        """``row_finite()`` (per task: its gradient is finite) and the solvers' flags, as one device flag."""
        checks, self._checks = self._checks, []
        mode = _checks.check_mode(self)
        if mode is None:
            return
        finite = row_finite()
        flags = [finite.all()] + [ok.reshape(()).to(finite.device) for ok, _ in checks]
        flag = flags[0] if len(flags) == 1 else torch.stack(flags).all()
        _checks.push(self, flag, lambda m: _report(m, finite, checks), mode)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name, buf in list(self._buffers.items()):  # lazily-sized state takes the saved shape
            key = prefix + name
            if key in state_dict and (buf is None or buf.shape != state_dict[key].shape):
                ref = state_dict[key]
                self._buffers[name] = torch.empty_like(ref, device=buf.device if buf is not None else ref.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if "step" in self._buffers and prefix + "step" in state_dict:
            self._step = int(state_dict[prefix + "step"])

    @classmethod
    def _make_example(cls, num_tasks: int) -> Aggregator:
        """An instance for ``num_tasks`` tasks with default arguments (used by the contract tests)."""
        return cls()

    def extra_repr(self) -> str:
        return ""


def _report(agg: Aggregator, finite: Tensor, checks: list[tuple[Tensor, str]]) -> None:
    """The error of a failed :meth:`Aggregator._run_checks` (reads the flags: the failure path only)."""
    for i, f in enumerate(finite.tolist()):
        if not f:
            raise ValueError(f"Gradient of task {i} (row {i} of the Jacobian) contains NaN or inf (or overflows float).")
    for ok, message in checks:
        if not bool(ok.all()):
            raise SolverError(f"{type(agg).__name__}: {message}")


class GramianAggregator(Aggregator):
    """An aggregator whose weights depend on the Gramian ``G = JJᵀ`` only: ``update = w(G)ᵀJ``.

    A subclass implements :meth:`weights_from_gramian`. Because only ``G[T, T]`` enters the solver, the
    weights can be computed from a Gramian accumulated any way (per layer, across devices), and
    ``update = ∇(Σ wᵢLᵢ)`` can then be obtained by one weighted backward pass.
    """

    #: the weights are one constant for every task whatever ``G`` (GradMean, GradSum): :func:`awloss.backward`
    #: then needs no Jacobian, only the gradient of ``ΣLᵢ`` (one backward pass).
    _uniform: ClassVar[bool] = False

    def forward(self, jacobian: Tensor) -> Tensor:
        G = jacobian @ jacobian.T
        w = self._weights_of(G)
        return w @ jacobian

    def gramian_weights(self, gramian: Tensor) -> Tensor:
        """Weights ``Tensor[T]`` for the Gramian ``gramian[T, T]`` (validated; solver checks run)."""
        if not isinstance(gramian, Tensor) or gramian.dim() != 2 or gramian.shape[0] != gramian.shape[1]:
            shape = tuple(gramian.shape) if isinstance(gramian, Tensor) else type(gramian).__name__
            raise ValueError(f"Argument `gramian` must be a square Tensor[T, T], got {shape}.")
        if not gramian.is_floating_point() or gramian.shape[0] == 0:
            raise ValueError(f"Argument `gramian` must be a non-empty floating point matrix, got {gramian.dtype}.")
        with _checks.step(self):
            self._checks = []
            w = self._weights_of(gramian)
            self._run_checks(lambda: torch.isfinite(gramian.diagonal()) & torch.isfinite(gramian).all(dim=1))
        return w

    def _weights_of(self, G: Tensor) -> Tensor:
        if self.check:  # a NaN would make eigh/solve raise before the check names the task
            G = torch.where(torch.isfinite(G), G, torch.zeros_like(G))
        w = self.weights_from_gramian(G).to(G.dtype)
        self._set_weights(w)
        return w

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Return the weights ``Tensor[T]`` for ``gramian`` (``G = JJᵀ``)."""
        raise NotImplementedError
