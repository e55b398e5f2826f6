"""The bench's figures (matplotlib, Agg): validation curves, task weights, Δm% bars and ``summary.png``.

Every panel: integer epoch ticks, plain tick labels (no offset notation), "validation" and units on the
axes, the mean over seeds with a band (min to max over seeds), one legend for the figure, and a title
naming the dataset, seeds and epochs (and "smoke test" under ``--quick``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_all"]

DPI = 100
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
STYLES = ("-", "--", ":", "-.")


def _setup() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain(ax: Any, *, x_epochs: bool = True) -> None:
    from matplotlib.ticker import ScalarFormatter

    if ax.get_yscale() == "linear":
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
        ax.yaxis.set_major_formatter(fmt)
    ax.grid(True, alpha=0.3)


def _curve(rs: Sequence[Mapping[str, Any]], get: Callable[[Mapping[str, Any]], float]) -> tuple[list[int], list[float], list[float], list[float]]:  # noqa: E501
    """Epochs, mean, min and max over the runs ``rs`` of ``get(history[e])``."""
    n = min(len(r["history"]) for r in rs)
    xs, mean, lo, hi = [], [], [], []
    for e in range(n):
        vals = [get(r["history"][e]) for r in rs]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        if not vals:
            continue
        xs.append(rs[0]["history"][e]["epoch"])
        mean.append(sum(vals) / len(vals))
        lo.append(min(vals))
        hi.append(max(vals))
    return xs, mean, lo, hi


def _draw(ax: Any, rs: Sequence[Mapping[str, Any]], get: Callable[..., float], **kw: Any) -> Any:
    xs, mean, lo, hi = _curve(rs, get)
    kw.setdefault("marker", "o")
    (line,) = ax.plot(xs, mean, ms=4, lw=1.4, **kw)
    if len(rs) > 1:
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    return line


def _xlim(ax: Any, epochs: int) -> None:
    from matplotlib.ticker import FixedLocator, MaxNLocator

    ax.set_xlim(0.5, max(epochs, 1) + 0.5)
    # integer epochs only (MaxNLocator falls back to fractions on a range of one epoch)
    ax.xaxis.set_major_locator(FixedLocator(range(1, epochs + 1)) if epochs <= 12 else MaxNLocator(integer=True, nbins=8))


def _legend(fig: Any, handles: Sequence[Any], labels: Sequence[str], title: str | None = None,
            spare: Any = None) -> int:  # fmt: skip
    """One legend for the figure: in a spare (empty) panel if there is one, else below the panels.
    Returns the number of legend rows below the panels (0 when it went into the spare panel)."""
    if not handles:
        return 0
    if spare is not None:
        spare.legend(handles, labels, loc="center", frameon=False, title=title, fontsize=10)
        return 0
    ncol = min(len(labels), 8)
    try:
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, title=title, fontsize=9)
    except ValueError:  # matplotlib < 3.7
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, title=title, fontsize=9)
    return math.ceil(len(labels) / ncol) + (1 if title else 0)


def _finish(fig: Any, plt: Any, path: Path, title: str, legend_rows: int) -> Path:
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_all(out: Path, res: Any) -> list[Path]:
    """Write ``curves.png``, ``weights.png``, ``delta_m.png`` and ``summary.png`` of ``res`` (a Results) to ``out``."""
    plt = _setup()
    runs, stl_runs, metrics, tasks = res.runs, res.stl_runs, res.metrics, res.tasks
    methods = list(dict.fromkeys(r["method"] for r in runs))
    cfg = res.payload.get("config", {})
    epochs = int(cfg.get("train", {}).get("epochs", max(len(r["history"]) for r in runs)))
    seeds = len(cfg.get("seeds", [])) or len({r["seed"] for r in runs})
    smoke = "SMOKE TEST (--quick), not meaningful: " if res.quick else ""
    band = ", band: min to max over seeds" if seeds > 1 else ""
    base_title = f"{smoke}{res.dataset}, {seeds} seed{'s' * (seeds != 1)}, {epochs} epoch{'s' * (epochs != 1)}"
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    paths = []

    # 1. validation curves, one panel per metric
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.3 * nrows), squeeze=False, layout="constrained")
    handles: dict[str, Any] = {}
    for ax, k in zip(axes.flat, metrics):
        for m in methods:
            handles[m] = _draw(ax, [r for r in runs if r["method"] == m], lambda h, k=k: h["val"][k.name], color=colors[m],
                               marker=MARKERS[methods.index(m) % len(MARKERS)])  # fmt: skip
        stl = [r for r in stl_runs if tasks[r["task"]] == k.task]
        if stl:
            handles["STL (single-task)"] = _draw(ax, stl, lambda h, k=k: h["val"][k.name], color="k", ls="--")
        unit = f" [{k.unit}]" if k.unit else ""
        ax.set_title(f"{k.name} ({'higher' if k.higher_is_better else 'lower'} is better)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {k.name}{unit}")
        _xlim(ax, epochs)
        _plain(ax)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    spare = list(axes.flat)[len(metrics)] if axes.size > len(metrics) else None
    rows_below = _legend(fig, list(handles.values()), list(handles), spare=spare)
    paths.append(_finish(fig, plt, out / "curves.png", f"Validation metrics per epoch: {base_title}{band}", rows_below))

    # 2. task weights over training, one panel per method (log axis when they span decades)
    cols = min(3, max(1, len(methods)))
    nrows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.1 * nrows), squeeze=False, layout="constrained")
    handles = {}
    for ax, m in zip(axes.flat, methods):
        rs = [r for r in runs if r["method"] == m]
        if all(h["weights"] is None for r in rs for h in r["history"]):  # GradDrop, TrimmedMean
            ax.text(0.5, 0.5, "no task weights:\nthe update is not wᵀJ", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9, color="0.3")  # fmt: skip
            ax.set_title(m, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        vals = [w for r in rs for h in r["history"] if h["weights"] is not None for w in h["weights"]]
        pos = [v for v in vals if v > 0 and math.isfinite(v)]
        log = len(pos) == len(vals) and pos and max(pos) / min(pos) > 100
        for t, name in enumerate(tasks):
            handles[name] = _draw(ax, rs, lambda h, t=t: h["weights"][t], color=f"C{t % 10}",
                                  marker=MARKERS[t % len(MARKERS)], ls=STYLES[t % len(STYLES)])  # fmt: skip
        same = bool(vals) and max(vals) - min(vals) <= 1e-9 * max(1.0, abs(max(vals)))
        if log:
            ax.set_yscale("log")
        elif vals:
            lo = min(0.0, min(vals) * 1.15)  # PBI's weights go negative (it pushes losses under its ray up)
            ax.set_ylim(lo, max(vals) * 1.15 if max(vals) > 0 else 1)  # from 0 at least: no magnified flat lines
        if same:
            ax.text(0.5, 0.35, f"every task: {vals[0]:g} (lines overlap)", transform=ax.transAxes, ha="center",
                    fontsize=9, color="0.3")  # fmt: skip
        ax.set_title(m + (" (log scale)" if log else ""), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("task weight (epoch mean)")
        _xlim(ax, epochs)
        _plain(ax)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    spare = list(axes.flat)[len(methods)] if axes.size > len(methods) else None
    rows_below = _legend(fig, list(handles.values()), list(handles), title="task", spare=spare)
    paths.append(_finish(fig, plt, out / "weights.png", f"Task weights during training: {base_title}{band}", rows_below))

    rows = res.summary["rows"]
    # 3. Δm% vs STL (or vs EW without STL) per method, mean ± std over seeds
    key = "delta_m_stl" if res.summary.get("stl_mean") else "delta_m_ew"
    bars = {m: r for m, r in rows.items() if m != "STL" and key in r and math.isfinite(r[key][0])}
    if bars:
        fig, ax = plt.subplots(figsize=(max(4.5, 0.7 * len(bars) + 2.5), 3.8), layout="constrained")
        names = list(bars) if res.quick else sorted(bars, key=lambda m: bars[m][key][0])
        ax.bar(names, [bars[m][key][0] for m in names], yerr=[bars[m][key][1] if math.isfinite(bars[m][key][1]) else 0.0 for m in names], capsize=3,
               color=["tab:green" if bars[m][key][0] < 0 else "tab:red" for m in names])  # fmt: skip
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel(f"test Δm% vs {'STL' if key == 'delta_m_stl' else 'EW'} [%] (lower is better)")
        ax.set_xlabel("method")
        ax.tick_params(axis="x", rotation=30)
        _plain(ax, x_epochs=False)
        ax.grid(False, axis="x")
        ref = "single-task baselines (STL)" if key == "delta_m_stl" else "EW"
        bars_note = "error bars: std over seeds" if seeds > 1 else "one seed: no error bars"
        paths.append(_finish(fig, plt, out / "delta_m.png", f"Test Δm% vs {ref}: {base_title}\n{bars_note}", 0))

    # 4. summary: Δm% vs EW (paired, 95% CI) against the cost per step, the recommendation marked
    ew = res.summary.get("ew_method")
    if ew in rows:
        fig, ax = plt.subplots(figsize=(7.2, 4.8), layout="constrained")
        ew_ms = rows[ew]["ms_per_step"][0]
        rec = res.verdict.get("method")
        ax.axhline(0, color="k", lw=0.8)
        ax.plot([ew_ms], [0.0], "s", color="k", ms=8, ls="none", label=f"{ew} (the baseline, 0 by definition)")
        for i, (m, c) in enumerate(res.comparisons.items()):
            s = c["delta_m"]
            if m not in rows or not math.isfinite(s["mean"]):
                continue
            x = rows[m]["ms_per_step"][0]
            lo, hi = s["ci"] if s["n"] >= 2 else (s["mean"], s["mean"])
            ax.errorbar([x], [s["mean"]], yerr=[[s["mean"] - lo], [hi - s["mean"]]], fmt=MARKERS[(i + 2) % len(MARKERS)],
                        color=colors.get(m, "C0"), capsize=4, ms=7,
                        label=f"{m}: {s['mean']:+.2f}%, {x / ew_ms:.2f}x ew's cost")  # fmt: skip
        if rec and rec in rows:
            y = res.comparisons[rec]["delta_m"]["mean"] if rec in res.comparisons else 0.0
            ax.plot([rows[rec]["ms_per_step"][0]], [y], marker="*", color="gold", mec="k", ms=20, ls="none",
                    label=f"recommended: {rec}" + (" (nothing beats it beyond noise)" if rec == ew else ""),
                    zorder=5)  # fmt: skip
        ax.set_xlabel("median time per training step [ms] (this machine)")
        ax.set_ylabel("test Δm% vs EW, paired by seed [%]\n(lower is better)")
        ax.set_xlim(0, ax.get_xlim()[1] * 1.05)
        ax.margins(y=0.12)
        _plain(ax, x_epochs=False)
        shown, labels = ax.get_legend_handles_labels()
        star = [i for i, label in enumerate(labels) if label.startswith("recommended")]
        order = [i for i in range(len(labels)) if i not in star] + star  # the recommendation last
        shown, labels = [shown[i] for i in order], [labels[i] for i in order]
        ax.legend(shown, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)
        ci = "95% CI over seeds (paired t)" if seeds > 1 else "one seed: no interval"
        verdict = "smoke test, nothing recommended" if res.quick else (f"recommended: {rec}" if rec else "no recommendation")
        fig.set_size_inches(7.2 + 0.06 * max(len(label) for label in labels), 4.8)
        paths.append(_finish(fig, plt, out / "summary.png", f"Which method? {base_title}\nerror bars: {ci}; {verdict}", 0))
    return paths
