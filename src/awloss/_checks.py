"""Deferred checks: each call leaves a boolean flag on the device; it is read one call later.

A check that reads its verdict at once (``bool(torch.isfinite(x).all())``) makes the host wait for the
device: on a GPU that is one ``cudaStreamSynchronize`` per call, which stalls the CPU's queueing of kernels
and breaks CUDA-graph capture. Instead each call computes its verdict on the device and *pushes* it here;
the next call of the same module (or a read of its ``.weights``, or its ``verify()``) *polls* it and, if
it failed, raises the same error, naming the task, one call late:

* on the CPU the flag is read as is (a flag produced by an earlier call: the value is ready);
* on CUDA the flag is copied into pinned host memory with ``non_blocking=True`` and an event is recorded;
  the poll reads the host copy once the event has completed (never waiting for it, except in an explicit
  ``verify()`` or when many checks are outstanding);
* on the ``meta`` device (no data) nothing is recorded.

A module's ``check`` attribute selects the mode: ``"deferred"`` (default, also ``True``), ``"immediate"``
(raise within the call that saw the bad value: one host read per call) or ``False`` (no checks). The
pending flags live outside the module (a weak mapping), so pickling, ``deepcopy`` and ``state_dict`` never
see them.
"""

from __future__ import annotations

import contextlib
import sys
import math
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_mode", "clear", "host_reads_are_free", "pending_flags", "poll", "push", "step", "strict_host_reads"]

MODES = ("deferred", "immediate")
_MAX_OUTSTANDING = 8  # more pending CUDA flags than this: wait for the oldest (the device is far behind)
_NOTE = (
    "awloss reported this one call late (deferred check, no host synchronisation in the step that produced it); "
    "set `check = 'immediate'` on the module to raise within that call."
)


_STRICT = [False]


def host_reads_are_free(t: Tensor) -> bool:
    """``True`` on the CPU (a host read does not wait for a device): solvers may then stop early.

    Inside :func:`strict_host_reads` it is ``False`` everywhere, so that a CPU run takes the accelerator's
    code path (the tests count host reads on the CPU as a proxy for synchronisations on a GPU).
    """
    return t.device.type == "cpu" and not _STRICT[0] and not torch.compiler.is_compiling()


@contextlib.contextmanager
def strict_host_reads() -> Iterator[None]:
    """Run the CPU as if it were an accelerator: no optional host reads (see :func:`host_reads_are_free`)."""
    old, _STRICT[0] = _STRICT[0], True
    try:
        yield
    finally:
        _STRICT[0] = old


class _Pending:
    __slots__ = ("event", "flag", "host", "reports")

    def __init__(self, flag: Tensor, host: Tensor | None, event: Any, report: Callable[[Any], None]) -> None:
        self.flag, self.host, self.event, self.reports = flag, host, event, [report]


_PENDING: weakref.WeakKeyDictionary[Any, list[_Pending]] = weakref.WeakKeyDictionary()
_LOCAL = threading.local()  # .active: the modules whose call is in progress, outermost first


def _active() -> list[Any]:
    active = getattr(_LOCAL, "active", None)
    if active is None:
        active = _LOCAL.active = []
    return active


@contextlib.contextmanager
def step(module: Any, *, read: bool = True) -> Iterator[None]:
    """One call of ``module`` (a step of :func:`awloss.backward`, an aggregator's call): the outermost
    polls the earlier flags once (unless ``read`` is false: the caller polls itself, e.g. under DDP); the
    checks of nested modules (an aggregator inside another, or inside ``awloss.backward``) are recorded
    on the outermost one, so that one read covers the whole step."""
    active = _active()
    if not active and read and not torch.compiler.is_compiling():
        poll(module)
    active.append(module)
    try:
        yield
    finally:
        active.pop()


def _on(ref: Any, report: Callable[[Any], None]) -> Callable[[Any], None]:
    return lambda _owner: report(ref())


def check_mode(module: Any) -> str | None:
    """``"deferred"``, ``"immediate"`` or ``None`` (checks off, or tracing under ``torch.compile``)."""
    mode = module.check
    if mode is True or mode == "deferred":
        return None if torch.compiler.is_compiling() else "deferred"
    if mode is False or mode is None or mode == "off":
        return None
    if mode == "immediate":
        return None if torch.compiler.is_compiling() else "immediate"
    raise ValueError(
        f"Attribute `check` of {type(module).__name__} must be 'deferred', 'immediate' or False, got {mode!r}."
    )


def _fine(flag: Tensor) -> bool:
    """The one host read: a bool flag is ``True``, a float flag finite, when all is fine."""
    return bool(flag) if flag.dtype == torch.bool else math.isfinite(float(flag))


def _merge(a: Tensor, b: Tensor) -> Tensor:
    if a.dtype == torch.bool and b.dtype == torch.bool:
        return a & b
    if a.dtype == torch.bool:
        a, b = b, a
    if b.dtype == torch.bool:  # True -> 0, False -> -inf
        b = b.to(a.dtype).log()
    return a + b.to(a.dtype)  # NaN and inf propagate (an overflow is a false alarm: the reports decide)


def push(module: Any, flag: Tensor, report: Callable[[Any], None], mode: str) -> None:
    """Record ``flag``, a 0-dim tensor: bool (``True`` = fine) or float (finite = fine, e.g. the sum of
    the checked values: one op); ``report(module)`` raises the error when it is not fine.

    ``report`` is called only after the flag was read as ``False``; it may read values from the device
    (the failure path) and should raise, or return when it finds nothing wrong (e.g. a sum that overflowed).
    In ``"immediate"`` mode the flag is read now (one host read).
    """
    if flag.device.type == "meta":
        return
    active = _active()
    if active and active[0] is not module:  # a nested module: its check is read with the outer call's
        report, module = _on(weakref.ref(module), report), active[0]
    if mode == "immediate":
        if not _fine(flag):
            report(module)
        return
    pending = _PENDING.get(module)
    if pending is None:
        pending = _PENDING[module] = []
    if flag.device.type == "cuda":
        host = torch.empty((), dtype=flag.dtype, pin_memory=True)
        host.copy_(flag, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        pending.append(_Pending(flag, host, event, report))
    elif pending and pending[-1].event is None:  # CPU (or another device): one flag per call, ANDed
        last = pending[-1]
        last.flag = _merge(last.flag, flag)
        last.reports.append(report)
    else:
        pending.append(_Pending(flag, None, None, report))


def poll(module: Any, *, wait: bool = False) -> None:
    """Read the flags of earlier calls of ``module``; raise the first failure's error (then forget the rest).

    On CUDA a flag whose copy has not arrived yet stays pending unless ``wait`` (or too many are pending).
    """
    pending = _PENDING.get(module)
    while pending:
        p = pending[0]
        if p.event is not None:
            if not p.event.query():
                if not wait and len(pending) <= _MAX_OUTSTANDING:
                    return
                p.event.synchronize()
            assert p.host is not None  # (a CUDA flag: copied to pinned host memory, with its event)
            ok = _fine(p.host)
        else:
            ok = _fine(p.flag)
        pending.pop(0)
        if ok:
            continue
        pending.clear()
        try:
            for report in p.reports:
                report(module)
        except Exception as e:  # the report's own error, with a note on where it comes from
            if sys.version_info >= (3, 11):  # (no notes on 3.10: the error as it is)
                e.add_note(_NOTE)
            raise


def clear(module: Any) -> None:
    """Forget the pending flags of ``module`` (``reset()``)."""
    _PENDING.pop(module, None)


def pending_flags(module: Any) -> list[Tensor]:
    """The flags not read yet (for tests: a default step reads only these)."""
    return [p.flag for p in _PENDING.get(module, ())]
