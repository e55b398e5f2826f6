"""The gradient-level base classes: ``Aggregator`` (``J[T, n] -> update[n]``) and ``GramianAggregator``."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import _checks
from ._solvers import gramian

__all__ = ["Aggregator", "GramianAggregator", "SolverError", "SolverFallbackWarning"]


class SolverError(RuntimeError):
    """Raised by a solver only for input it cannot use; a finite PSD Gramian never raises it."""


class SolverFallbackWarning(UserWarning):
    """A solver could not certify its answer; the method used its documented safe answer instead.

    Warned once per instance; every fallback is counted in ``Aggregator.solver_fallbacks``.
    """


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
    #: ``"left_out"``: a zero row (absent task) is left out of the solve, gets weight 0, and the other tasks
    #: get the ``T - 1`` task answer (the base does it for Gramian and stateless methods; stateful
    #: non-Gramian methods do it in ``forward``). Gramian methods with ``masked_rows`` do it with a device
    #: mask on every device; the others and the stateless ones find the rows by a host read, on the CPU only. ``"kept"``: the method's weights do not depend on the rows
    #: (fixed user weights, a robust statistic), documented in its docstring. ``"own"``: the method's own
    #: solve treats zero rows (Krum's masks, PCD's primary row 0); the base leaves them in.
    zero_rows: ClassVar[str] = "left_out"
    check: bool | str = True  # True / "deferred" (default), "immediate" or False
    _fallback_warned: bool  # set on an instance by its first SolverFallbackWarning
    step: Tensor  # buffer of the stateful methods, registered by `_init_step_counter` (the call count)

    def __init__(self) -> None:
        super().__init__()
        self._weights: Tensor | None = None
        self._checks: list[tuple[Tensor, str]] = []
        self._fallbacks: Tensor | int = 0
        self._rows: Tensor | None = None

    # ------------------------------------------------------------------ call
    def __call__(self, jacobian: Tensor) -> Tensor:
        """Aggregate ``jacobian`` (``Tensor[T, ...]``, one row per task) into one update ``Tensor[...]``.

        The update is not differentiable (like TorchJD's): the weights are a choice made from the
        gradients' values, and the result never carries an autograd graph.
        """
        J = self._validate_jacobian(jacobian)
        with _checks.step(self):  # reads the earlier calls' flags (unless nested in awloss.backward)
            self._checks = []
            J2 = J.reshape(J.shape[0], -1).detach()
            rows = None
            out: Tensor
            if not isinstance(self, GramianAggregator) and not self.stateful and self.zero_rows == "left_out":
                rows = _nonzero_rows_of(J2)  # stateless methods: solve the T - 1 task problem (Gramian ones: below)
            if rows is None:
                out = super().__call__(J2)
            else:
                out = super().__call__(J2[rows]) if rows.numel() else J2.new_zeros(J2.shape[1])
                if self._weights is not None and rows.numel():
                    self._weights = self._weights.new_zeros(J2.shape[0]).index_copy(0, rows, self._weights)
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

    @property
    def solver_fallbacks(self) -> int:
        """How many calls (since construction or :meth:`reset`) used the documented safe answer because the
        solver could not certify its own (reading it synchronises with the device)."""
        return int(self._fallbacks)

    def _certified(self, w: Tensor, ok: Tensor, safe: Tensor, what: str = "the solver") -> Tensor:
        """``w`` where the solver certified it (``ok``), else the documented ``safe`` answer, counted in
        :attr:`solver_fallbacks` and warned once (a :class:`SolverFallbackWarning`). No host read on an
        accelerator with ``check = False``."""
        ok = ok.reshape(()) & torch.isfinite(w).all()
        self._fallbacks = self._fallbacks + (~ok).to(torch.long)
        if not torch.compiler.is_compiling() and not self.__dict__.get("_fallback_warned", False):
            # a device flag read with the deferred checks (the warning comes one call late, no host read)
            mode = "immediate" if _checks.check_mode(self) == "immediate" else "deferred"
            _checks.push(self, ok, lambda m: _warn_fallback(m, what), mode)
        return torch.where(ok, w, safe.to(w.dtype))

    def _expect(self, ok: Tensor, message: str) -> None:
        """Register a boolean tensor that must be true; checked once at the end of the call."""
        self._checks.append((ok, message))

    # ------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Restore the state right after construction (buffers, recorded weights)."""
        self._weights = None
        _checks.clear(self)
        self._fallbacks = 0
        self.__dict__.pop("_fallback_warned", None)
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


def _warn_fallback(agg: Aggregator, what: str) -> None:
    if agg.__dict__.get("_fallback_warned", False):
        return
    agg._fallback_warned = True
    warnings.warn(
        f"{type(agg).__name__}: {what} could not certify its answer; using the documented fallback "
        "(counted in `solver_fallbacks`; warned once).",
        SolverFallbackWarning,
        stacklevel=5,
    )


def _report(agg: Aggregator, finite: Tensor, checks: list[tuple[Tensor, str]]) -> None:
    """The error of a failed :meth:`Aggregator._run_checks` (reads the flags: the failure path only)."""
    for i, f in enumerate(finite.tolist()):
        if not f:
            raise ValueError(f"Gradient of task {i} (row {i} of the Jacobian) contains NaN or inf (or overflows float).")
    for ok, message in checks:
        if not bool(ok.all()):
            raise SolverError(f"{type(agg).__name__}: {message}")


def _nonzero_rows(G: Tensor) -> Tensor | None:
    """Indices of the rows of ``G`` whose diagonal is not exactly 0, ``None`` when there is no zero row.

    NaN counts as non-zero (the finiteness check then names the task)."""
    if not _checks.host_reads_are_free(G):  # the row test is a host read: a sync on an accelerator
        return None
    nonzero = G.diagonal() != 0
    if bool(nonzero.all()):
        return None
    return nonzero.nonzero().squeeze(1)


def _nonzero_rows_of(J: Tensor) -> Tensor | None:
    """Indices of the rows of ``J`` that are not all exactly 0 (NaN counts as non-zero), ``None`` if all are."""
    if not _checks.host_reads_are_free(J):  # the row test is a host read: a sync on an accelerator
        return None
    nonzero = (J != 0).any(dim=1)
    if bool(nonzero.all()):
        return None
    return nonzero.nonzero().squeeze(1)


class GramianAggregator(Aggregator):
    """An aggregator whose weights depend on the Gramian ``G = JJᵀ`` only: ``update = w(G)ᵀJ``.

    A subclass implements :meth:`weights_from_gramian`. Because only ``G[T, T]`` enters the solver, the
    weights can be computed from a Gramian accumulated any way (per layer, across devices), and
    ``update = ∇(Σ wᵢLᵢ)`` can then be obtained by one weighted backward pass.
    """

    #: the weights are one constant for every task whatever ``G`` (GradMean, GradSum): :func:`awloss.backward`
    #: then needs no Jacobian, only the gradient of ``ΣLᵢ`` (one backward pass).
    _uniform: ClassVar[bool] = False
    #: ``weights_from_gramian`` reads :meth:`_present` (a device mask of the non-zero rows) and answers the
    #: problem without the zero rows itself: no host read, the same answer on every device. Otherwise the
    #: base leaves zero rows out where a host read is free (the CPU) and keeps them elsewhere.
    masked_rows: ClassVar[bool] = False

    def forward(self, jacobian: Tensor) -> Tensor:
        G = gramian(jacobian)  # float64: a float32 Gramian is indefinite by round-off (see _solvers)
        w = self._weights_of(G, jacobian.dtype)
        return w @ jacobian

    def gramian_weights(self, gramian: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Weights ``Tensor[T]`` for the Gramian ``gramian[T, T]`` (validated; solver checks run), in ``dtype``
        (default: the Gramian's; pass the Jacobian's dtype for a Gramian built in float64 from float32 rows).

        Build ``gramian`` in float64 where you can (:func:`~awloss.aggregation._solvers.gramian`): a float32
        one is solved with an extra ridge of ``T·eps·tr(G)`` that covers its round-off.
        """
        if not isinstance(gramian, Tensor) or gramian.dim() != 2 or gramian.shape[0] != gramian.shape[1]:
            shape = tuple(gramian.shape) if isinstance(gramian, Tensor) else type(gramian).__name__
            raise ValueError(f"Argument `gramian` must be a square Tensor[T, T], got {shape}.")
        if not gramian.is_floating_point() or gramian.shape[0] == 0:
            raise ValueError(f"Argument `gramian` must be a non-empty floating point matrix, got {gramian.dtype}.")
        with _checks.step(self):
            self._checks = []
            w = self._weights_of(gramian.detach(), gramian.dtype if dtype is None else dtype)
            self._run_checks(lambda: torch.isfinite(gramian.diagonal()) & torch.isfinite(gramian).all(dim=1))
        return w

    def _weights_of(self, G: Tensor, dtype: torch.dtype) -> Tensor:
        """The weights for ``G``, solved on the non-zero rows only.

        A zero row (a task absent from the batch, or one whose loss does not reach these parameters) is left
        out of the solve: it gets weight 0 and the other tasks get the weights of the ``T - 1`` task problem.
        Stateful subclasses read :attr:`_rows` (the indices solved, ``None`` for all) and ``_rows_of`` (the
        number of tasks they index) to index their state.
        A ``masked_rows`` method gets the mask instead (no host read, every device); for the others finding
        zero rows reads one boolean from the device, on the CPU only (elsewhere they are kept).
        """
        masked = self.masked_rows and self.zero_rows == "left_out"
        rows = _nonzero_rows(G) if self.zero_rows == "left_out" and not masked else None
        present = G.diagonal() != 0 if masked else None  # NaN counts as present (the check names the task)
        if self.check:  # a NaN would make eigh/solve raise before the check names the task
            G = torch.where(torch.isfinite(G), G, torch.zeros_like(G))
        if rows is None:
            self.__dict__["_present_rows"] = present
            try:
                w = self.weights_from_gramian(G)
            finally:
                self.__dict__["_present_rows"] = None
            if present is not None:
                w = torch.where(present, w, torch.zeros_like(w))
        else:
            self._rows, self._rows_of = rows, G.shape[0]
            try:
                sub = self.weights_from_gramian(G[rows][:, rows]) if rows.numel() else G.new_zeros(0)
            finally:
                self._rows = None
            w = G.new_zeros(G.shape[0], dtype=sub.dtype).index_copy(0, rows, sub)
        w = w.to(dtype)
        self._set_weights(w)
        return w

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Return the weights ``Tensor[T]`` for ``gramian`` (``G = JJᵀ``)."""
        raise NotImplementedError

    def _present(self) -> Tensor | None:
        """For a ``masked_rows`` method inside a call: the device mask of the rows to solve (the non-zero
        ones); ``None`` when all are (a direct ``weights_from_gramian`` call)."""
        return self.__dict__.get("_present_rows")
