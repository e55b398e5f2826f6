"""The method registry: ``awloss.get(name, **kwargs)`` and ``awloss.available(kind=None)``.

Every public method class is registered with :func:`register`, under its ``name`` and its ``aliases``.
Names are case-insensitive and ``-``/``_`` are interchangeable, so ``get("Auto-Weighted-Loss")`` works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

if TYPE_CHECKING:
    from .aggregation._base import Aggregator
    from .weighting._base import Weighting

__all__ = ["register", "get", "available", "get_class", "WeightingName", "AggregatorName"]

# Every registered spelling, by level, so that type checkers know what `get` returns. A test keeps these in step
# with the registry: a new method adds its names here.
WeightingName = Literal[
    "automatic_weighted_loss", "awl", "constant", "cosmos", "dwa", "dynamic_weight_average", "equal", "ew", "famo",
    "fixed", "geometric", "geometric_mean", "gls", "gradnorm", "imtl_l", "imtll", "kendall", "liebel", "log_sum",
    "ls", "mean", "pbi", "random", "random_weighting", "rlw", "scale_invariant", "si", "smooth_tchebycheff",
    "soft_optimal_uncertainty", "static", "stch", "sum", "uncertainty", "uncertainty_weighting", "uw", "uw_log1p",
    "uw_so", "uwso"
]
AggregatorName = Literal[
    "aligned_mtl", "amtl", "cagrad", "config", "conflictfree", "cr_mogm", "crmogm", "db_mtl", "dbmtl", "dualproj",
    "excess_mtl", "excessmtl", "fair_grad", "fairgrad", "grad_constant", "grad_fixed", "grad_mean", "grad_random",
    "grad_rlw", "grad_sum", "graddrop", "gradvac", "imtl_g", "imtlg", "krum", "mgda", "moco", "modo", "multi_krum",
    "nash_mtl", "nashmtl", "pcd", "pcgrad", "sdmgrad", "trimmed_mean", "trimmedmean", "upgrad"
]

_CLASSES: dict[str, type] = {}  # canonical name -> class
_LOOKUP: dict[str, str] = {}  # every accepted spelling -> canonical name

C = TypeVar("C", bound=type)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register(cls: C) -> C:
    """Class decorator: add ``cls`` to the registry under ``cls.name`` and ``cls.aliases``.

    Once registered, a method is built by :func:`get`, listed by :func:`available` and covered by the
    contract and property suites, which are parametrised over the registry.

    Args:
        cls: a subclass of :class:`awloss.Weighting` or :class:`awloss.aggregation.Aggregator` with a
            non-empty class attribute ``name`` (the canonical key) and optional ``aliases``.

    Returns:
        ``cls`` itself, so ``@register`` can decorate the class statement.

    Raises:
        TypeError: ``cls`` has no non-empty string ``name``.
        ValueError: its name or an alias is already registered by another class.

    Example:
        >>> import torch, awloss
        >>> @awloss.register
        ... class Halves(awloss.Weighting):
        ...     name = "doc_halves"
        ...     def forward(self, losses):
        ...         self._set_weights(torch.full_like(losses, 0.5).detach())
        ...         return 0.5 * losses.sum()
        >>> awloss.get("doc-halves", num_tasks=2)(torch.tensor(2.0), torch.tensor(4.0))
        tensor(3.)
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute `name` to be registered.")
    canonical = _key(name)
    for spelling in (canonical, *map(_key, getattr(cls, "aliases", ()))):
        owner = _LOOKUP.get(spelling)
        if owner is not None and _CLASSES[owner] is not cls:
            raise ValueError(f"Method name {spelling!r} is already registered by {_CLASSES[owner].__name__}.")
        _LOOKUP[spelling] = canonical
    _CLASSES[canonical] = cls
    return cls


def get_class(name: str) -> type:
    """Return the class registered under ``name`` (or one of its aliases), without building it.

    Args:
        name: a registered name or alias; case-insensitive, ``-`` and ``_`` interchangeable.

    Raises:
        TypeError: ``name`` is not a string.
        KeyError: no method is registered under ``name`` (the message lists the available names).

    Example:
        >>> import awloss
        >>> awloss.get_class("automatic-weighted-loss").__name__
        'AutomaticWeightedLoss'
        >>> awloss.get_class("upgrad").kind
        'aggregator'
    """
    if not isinstance(name, str):
        raise TypeError(f"Argument `name` must be a str, got {name!r}.")
    canonical = _LOOKUP.get(_key(name))
    if canonical is None:
        raise KeyError(f"Unknown method {name!r}; available: {', '.join(available())}.")
    return _CLASSES[canonical]


@overload
def get(name: WeightingName, /, **kwargs: Any) -> Weighting: ...
@overload
def get(name: AggregatorName, /, **kwargs: Any) -> Aggregator: ...
@overload
def get(name: str, /, **kwargs: Any) -> Weighting | Aggregator: ...
def get(name: str, /, **kwargs: Any) -> Any:
    """Build the method registered under ``name`` with ``kwargs``.

    Args:
        name: a registered name or alias (see :func:`available`); case-insensitive, ``-`` and ``_``
            interchangeable.
        **kwargs: the constructor arguments of that class (see its page).

    Returns:
        A new :class:`awloss.Weighting` (loss level) or :class:`awloss.aggregation.Aggregator`
        (gradient level).

    Raises:
        KeyError: no method is registered under ``name``.
        TypeError: ``kwargs`` do not fit the class's constructor.

    Example:
        >>> import awloss
        >>> awloss.get("awl", num_tasks=2)
        AutomaticWeightedLoss(num_tasks=2, regularizer='log1p', parameterization='log_variance')
    """
    return get_class(name)(**kwargs)


def available(kind: str | None = None) -> list[str]:
    """Sorted canonical names of the registered methods, optionally of one ``kind``.

    Args:
        kind: ``"weighting"`` (loss level), ``"aggregator"`` (gradient level) or ``None`` for all.

    Example:
        >>> import awloss
        >>> "uw" in awloss.available("weighting")
        True
    """
    kinds = {getattr(c, "kind", None) for c in _CLASSES.values()} | {"weighting", "aggregator"}
    if kind is not None and kind not in kinds:
        raise ValueError(f"Argument `kind` must be one of {sorted(k for k in kinds if k)} or None, got {kind!r}.")
    return sorted(n for n, c in _CLASSES.items() if kind is None or getattr(c, "kind", None) == kind)
