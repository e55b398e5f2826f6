"""The bench's verdict: every method against EW, paired by seed, and one ``Recommendation:`` line.

For each seed ``s`` the method and EW see the same data order and the same initialisation, so their
difference on that seed is free of the seed's luck. The verdict tests the mean of these differences:

.. math::

    d_s = \\Delta_m\\%(M_{m,s}, M_{\\mathrm{EW},s}), \\qquad
    t = \\frac{\\bar d}{s_d / \\sqrt{n}}, \\quad \\nu = n - 1

where:
    - :math:`M_{m,s}` are the test metrics of the method on seed ``s``, :math:`M_{\\mathrm{EW},s}` those of EW;
    - :math:`\\bar d`, :math:`s_d` are the mean and standard deviation of :math:`d_s` over the ``n`` seeds
      both have; the 95 % interval is :math:`\\bar d \\pm t_{0.975,\\nu}\\, s_d/\\sqrt{n}`;
    - p-values are two-sided (Student's t), Holm-adjusted over the compared methods.

A method *beats EW beyond seed noise* when its adjusted p < ``alpha`` and :math:`\\bar d < 0` (lower
Δm% is better). The same test runs per metric (relative difference in %, sign-adjusted so that lower
is better). With a single seed there is nothing to test and the verdict says so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .deltam import delta_m

__all__ = ["t_sf", "t_quantile", "paired_t", "holm", "compare_to_ew", "recommend", "ALPHA"]

ALPHA = 0.05


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta :math:`I_x(a, b)`."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """Two-sided tail probability :math:`P(|T| \\ge |t|)` of Student's t with ``df`` degrees of freedom.

    Example:
        >>> round(t_sf(4.302652729911275, 2), 6)
        0.05
    """
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (``0.5 < q < 1``), by bisection on :func:`t_sf`.

    Example:
        >>> round(t_quantile(0.975, 2), 4)
        4.3027
    """
    target = 2.0 * (1.0 - q)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > target:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_sf(mid, df) > target else (lo, mid)
    return (lo + hi) / 2.0


def paired_t(diffs: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Paired t-test of ``mean(diffs) == 0``: n, mean, sd, t, df, two-sided p and the ``level`` interval."""
    xs = [float(d) for d in diffs if d is not None and math.isfinite(d)]
    n = len(xs)
    out: dict[str, Any] = {"n": n, "mean": statistics.fmean(xs) if xs else float("nan"), "sd": float("nan"),
                           "t": float("nan"), "df": n - 1, "p": float("nan"), "ci": [float("nan"), float("nan")],
                           "level": level}  # fmt: skip
    if n < 2:
        return out
    mean, sd = out["mean"], statistics.stdev(xs)
    out["sd"] = sd
    if sd == 0.0:
        out["t"], out["p"], out["ci"] = (0.0, 1.0, [mean, mean]) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0, [mean, mean])
        return out
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    out.update(t=mean / se, p=t_sf(mean / se, n - 1), ci=[mean - half, mean + half])
    return out


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and does not count as a comparison)."""
    valid = sorted((p, k) for k, p in pvalues.items() if p == p)
    out = {k: float("nan") for k in pvalues}
    running, m = 0.0, len(valid)
    for i, (p, k) in enumerate(valid):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def compare_to_ew(runs: Sequence[Mapping[str, Any]], higher: Mapping[str, bool], ew: str | None) -> dict[str, Any]:
    """Per method (EW excluded): the paired t-test of Δm% vs EW over seeds and of each metric, Holm-adjusted."""
    if ew is None:
        return {}
    ew_by_seed = {r["seed"]: r["test"] for r in runs if r["method"] == ew}
    methods = list(dict.fromkeys(r["method"] for r in runs if r["method"] != ew))
    out: dict[str, Any] = {}
    for m in methods:
        mine = {r["seed"]: r["test"] for r in runs if r["method"] == m}
        seeds = sorted(set(mine) & set(ew_by_seed))
        dm = [delta_m(mine[s], ew_by_seed[s], higher, skip_zero=True) for s in seeds]
        per_metric = {}
        for k, hib in higher.items():
            rel = [100.0 * (-1.0 if hib else 1.0) * (mine[s][k] - ew_by_seed[s][k]) / abs(ew_by_seed[s][k])
                   for s in seeds if ew_by_seed[s][k] != 0]  # fmt: skip
            per_metric[k] = paired_t(rel)
        out[m] = {"seeds": seeds, "per_seed_delta_m": dm, "delta_m": paired_t(dm), "per_metric": per_metric}
    for k, adj in holm({m: c["delta_m"]["p"] for m, c in out.items()}).items():
        out[k]["delta_m"]["p_holm"] = adj
    for k in higher:
        for m, adj in holm({m: c["per_metric"][k]["p"] for m, c in out.items()}).items():
            out[m]["per_metric"][k]["p_holm"] = adj
    return out


def _num(x: float) -> str:
    return f"{x:+.2f}"


def recommend(comparisons: Mapping[str, Any], cost: Mapping[str, float], *, ew: str | None, n_seeds: int,
              quick: bool = False, alpha: float = ALPHA) -> dict[str, Any]:  # fmt: skip
    """The verdict: which method (if any) beats EW beyond seed noise, and at what cost per step.

    ``cost`` maps each method to its time per step; the ratio to EW's is reported. Returns a dict with
    ``text`` (the line starting ``Recommendation:``), ``method`` (``None`` when the bench refuses),
    ``better``/``worse`` (beyond noise), ``statistic`` and ``alpha``.
    """
    out: dict[str, Any] = {"method": None, "better": [], "worse": [], "alpha": alpha, "baseline": ew,
                           "statistic": "paired t-test over seeds of delta_m% vs ew (same data order and init "
                                        "per seed), two-sided, Holm-adjusted over methods; 95% t-interval"}  # fmt: skip
    if quick:
        out["text"] = ("Recommendation: none: --quick is a smoke test (tiny subsets, 1-2 epochs, chance-level numbers); "
                       "its numbers are not ranked. Run without --quick for a verdict.")  # fmt: skip
        return out
    if ew is None:
        out["text"] = ("Recommendation: none: the verdict compares every method with ew paired by seed, and ew is not "
                       "among the methods; add ew to --methods.")  # fmt: skip
        return out
    if n_seeds < 2:
        out["text"] = ("Recommendation: none: a single seed cannot tell a method from seed noise (the paired test "
                       "needs 2 seeds or more, better 3-5); rerun with --seeds 3.")  # fmt: skip
        return out
    if not comparisons:
        out["text"] = "Recommendation: none: only ew was run, there is nothing to compare it with."
        return out
    ratio = {m: (cost.get(m, math.nan) / cost[ew]) if cost.get(ew) else math.nan for m in comparisons}
    for m, c in comparisons.items():
        s = c["delta_m"]
        if s["p_holm"] == s["p_holm"] and s["p_holm"] < alpha:
            (out["better"] if s["mean"] < 0 else out["worse"]).append(m)
    out["better"].sort(key=lambda m: comparisons[m]["delta_m"]["mean"])
    out["cost_ratio"] = ratio
    n = min(len(c["seeds"]) for c in comparisons.values())

    def describe(m: str) -> str:
        s = comparisons[m]["delta_m"]
        return (f"Δm% vs ew {_num(s['mean'])} (95% CI {_num(s['ci'][0])} to {_num(s['ci'][1])}, Holm p = "
                f"{s['p_holm']:.3g}) at {ratio[m]:.2f}x ew's time per step")  # fmt: skip

    if out["better"]:
        best = out["better"][0]
        out["method"] = best
        text = f"Recommendation: {best}: beats ew beyond seed noise, {describe(best)}; paired t-test over {n} seeds"
        others = [f"{m} ({_num(comparisons[m]['delta_m']['mean'])}, {ratio[m]:.2f}x)" for m in out["better"][1:]]
        if others:
            text += f"; also beyond noise: {', '.join(others)}"
        out["text"] = text + "."
        return out
    out["method"] = ew
    closest = min(comparisons, key=lambda m: comparisons[m]["delta_m"]["mean"] if comparisons[m]["delta_m"]["mean"] == comparisons[m]["delta_m"]["mean"] else math.inf)  # noqa: E501
    text = (f"Recommendation: {ew}: no method beats ew beyond seed noise on this data (paired t-test over {n} seeds, "
            f"Holm-adjusted p >= {alpha:g} for all; closest: {closest}, {describe(closest)}); use ew, or uw if loss "
            "scales differ")  # fmt: skip
    if out["worse"]:
        text += f". Worse than ew beyond noise: {', '.join(out['worse'])}"
    out["text"] = text + "."
    return out
