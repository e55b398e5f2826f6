"""Δm% and mean rank, in the convention of Nash-MTL (Navon et al., ICML 2022).

.. math::

    \\Delta_m\\% = \\frac{100}{K} \\sum_{k=1}^{K} (-1)^{\\delta_k} \\frac{M_{m,k} - M_{b,k}}{M_{b,k}}

where:
    - :math:`M_{m,k}` is metric ``k`` of the method and :math:`M_{b,k}` that of the baseline
      (single-task learning, or equal weighting);
    - :math:`\\delta_k = 1` if higher is better for metric ``k``, else 0;
    - the average is flat over all ``K`` metrics (not per task first, unlike LibMTL's Δp).

**Lower is better**: a positive Δm% is a loss against the baseline. LibMTL's Δp is the same quantity
with the opposite sign when each task has one metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["delta_m", "mean_rank"]


def delta_m(
    metrics: Mapping[str, float],
    baseline: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
    *,
    skip_zero: bool = False,
) -> float:
    """Δm% of ``metrics`` against ``baseline`` (flat mean over the baseline's metrics; lower is better).

    A baseline metric equal to 0 makes the ratio undefined: an error, or left out of the mean with
    ``skip_zero=True`` (used by the bench for model selection early in training, e.g. a 0 % "within
    11.25°" after one epoch).

    Example:
        >>> delta_m({"acc": 90.0, "mae": 1.5}, {"acc": 80.0, "mae": 2.0}, {"acc": True, "mae": False})
        -18.75
    """
    if not baseline:
        raise ValueError("Argument `baseline` is empty: Δm% needs at least one metric.")
    total, count = 0.0, 0
    for k, b in baseline.items():
        if k not in metrics:
            raise KeyError(f"Metric {k!r} of the baseline is missing from `metrics` ({sorted(metrics)}).")
        if b == 0:
            if skip_zero:
                continue
            raise ValueError(f"Baseline metric {k!r} is 0: Δm% divides by it.")
        sign = -1.0 if higher_is_better[k] else 1.0
        total += sign * (metrics[k] - b) / abs(b)
        count += 1
    return 100.0 * total / count if count else 0.0


def mean_rank(table: Mapping[str, Mapping[str, float]], higher_is_better: Mapping[str, bool]) -> dict[str, float]:
    """Mean over metrics of each method's rank (1 = best; ties share the average rank).

    Example:
        >>> mean_rank({"a": {"x": 1.0, "y": 5.0}, "b": {"x": 2.0, "y": 4.0}}, {"x": False, "y": False})
        {'a': 1.5, 'b': 1.5}
    """
    methods: Sequence[str] = list(table)
    ranks = {m: 0.0 for m in methods}
    keys = list(higher_is_better)
    for k in keys:
        vals = {m: table[m][k] for m in methods}
        for m in methods:
            v = vals[m]
            better = sum(1 for o in methods if (vals[o] > v if higher_is_better[k] else vals[o] < v))
            ties = sum(1 for o in methods if vals[o] == v)
            ranks[m] += better + (ties + 1) / 2
    return {m: r / len(keys) for m, r in ranks.items()}
