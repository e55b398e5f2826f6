"""Aggregate bench runs: mean ± std over seeds, Δm% vs STL and vs EW, mean rank; table, CSV, JSON, PNGs."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .datasets import Metric
from .deltam import delta_m, mean_rank

__all__ = ["summarise", "format_table", "write_csv", "write_json", "plot_all", "EW_NAMES"]

EW_NAMES = ("ew", "sum", "equal", "ls")


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def stl_by_seed(stl_runs: Sequence[Mapping[str, Any]], metrics: Sequence[Metric], tasks: Sequence[str]) -> dict[int, dict[str, float]]:
    """Per seed, the metrics of each task taken from that task's own STL run."""
    out: dict[int, dict[str, float]] = {}
    for r in stl_runs:
        name = tasks[r["task"]]
        out.setdefault(r["seed"], {}).update({m.name: r["test"][m.name] for m in metrics if m.task == name})
    return {s: v for s, v in out.items() if len(v) == len(metrics)}


def summarise(runs: Sequence[Mapping[str, Any]], stl_runs: Sequence[Mapping[str, Any]], metrics: Sequence[Metric],
              tasks: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """Per method: metric mean/std, Δm% vs STL and EW (mean/std over seeds), mean rank, ms/step."""
    higher = {m.name: m.higher_is_better for m in metrics}
    names = [m.name for m in metrics]
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        by_method.setdefault(r["method"], []).append(r)
    stl = stl_by_seed(stl_runs, metrics, tasks)
    stl_mean = {k: statistics.fmean(s[k] for s in stl.values()) for k in names} if stl else None
    ew = next((m for m in by_method if m in EW_NAMES), None)
    ew_mean = {k: statistics.fmean(r["test"][k] for r in by_method[ew]) for k in names} if ew else None
    rows: dict[str, dict[str, Any]] = {}
    if stl:
        rows["STL"] = {"kind": "stl", "seeds": len(stl), "metrics": {k: _mean_std([s[k] for s in stl.values()]) for k in names},
                       "delta_m_stl": (0.0, 0.0), "ms_per_step": _mean_std([r["ms_per_step"] for r in stl_runs])}  # fmt: skip
        if ew_mean:
            rows["STL"]["delta_m_ew"] = _mean_std([delta_m(s, ew_mean, higher, skip_zero=True) for s in stl.values()])
    for m, rs in by_method.items():
        row: dict[str, Any] = {"kind": rs[0]["kind"], "seeds": len(rs),
                               "metrics": {k: _mean_std([r["test"][k] for r in rs]) for k in names},
                               "ms_per_step": _mean_std([r["ms_per_step"] for r in rs])}  # fmt: skip
        if stl_mean:
            row["delta_m_stl"] = _mean_std([delta_m(r["test"], stl_mean, higher, skip_zero=True) for r in rs])
        if ew_mean:
            row["delta_m_ew"] = _mean_std([delta_m(r["test"], ew_mean, higher, skip_zero=True) for r in rs])
        rows[m] = row
    mtl = {m: {k: rows[m]["metrics"][k][0] for k in names} for m in by_method}
    if len(mtl) > 1:
        for m, r in mean_rank(mtl, higher).items():
            rows[m]["mean_rank"] = r
    return {"rows": rows, "stl_mean": stl_mean, "ew_method": ew, "metric_names": names,
            "convention": "Nash-MTL delta_m (flat over metrics, lower is better; vs STL mean over seeds)"}  # fmt: skip


def _fmt(ms: tuple[float, float] | None, digits: int = 3) -> str:
    if ms is None or not math.isfinite(ms[0]):
        return "-"
    m, s = ms
    scale = max(abs(m), abs(s))
    prec = max(0, digits - 1 - int(math.floor(math.log10(scale)))) if scale > 1e-12 else 2
    prec = min(prec, 4)
    mean = f"{m:.{prec}f}"
    if mean.startswith("-") and float(mean) == 0:
        mean = mean[1:]  # no "-0.00"
    return f"{mean} ± {s:.{prec}f}"


def _grid(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def format_table(summary: Mapping[str, Any], metrics: Sequence[Metric], title: str = "") -> str:
    """Terminal table(s): Δm% vs STL / EW, mean rank, ms/step and per-metric mean ± std."""
    rows = summary["rows"]
    order = sorted(rows, key=lambda m: (m != "STL", rows[m].get("delta_m_stl", rows[m].get("delta_m_ew", (0, 0)))[0]))
    arrows = {m.name: ("↑" if m.higher_is_better else "↓") for m in metrics}
    head = ["method", "Δm% vs STL ↓", "Δm% vs EW ↓", "MR ↓", "ms/step", "seeds"]
    inline = len(metrics) <= 4
    if inline:
        head += [f"{m.name} {arrows[m.name]}" for m in metrics]
    body = []
    for m in order:
        r = rows[m]
        mr = r.get("mean_rank")
        cells = [m, _fmt(r.get("delta_m_stl"), 2), _fmt(r.get("delta_m_ew"), 2), "-" if mr is None else f"{mr:.2f}",
                 f"{r['ms_per_step'][0]:.1f}", str(r["seeds"])]  # fmt: skip
        if inline:
            cells += [_fmt(r["metrics"][k.name]) for k in metrics]
        body.append(cells)
    out = ([title] if title else []) + [_grid(head, body)]
    if not inline:
        head2 = ["method"] + [f"{k.name}{' [' + k.unit + ']' if k.unit else ''} {arrows[k.name]}" for k in metrics]
        out += ["", _grid(head2, [[m] + [_fmt(rows[m]["metrics"][k.name]) for k in metrics] for m in order])]
    out.append(f"Δm%: {summary['convention']}. MR: mean rank over metrics among the MTL methods.")
    return "\n".join(out)


def write_csv(path: Path, dataset: str, runs: Sequence[Mapping[str, Any]], stl_runs: Sequence[Mapping[str, Any]],
              summary: Mapping[str, Any], metrics: Sequence[Metric], tasks: Sequence[str]) -> None:  # fmt: skip
    """Long format: one row per method × seed × metric (test split), plus Δm%, ms/step and epoch rows."""
    higher = {m.name: m.higher_is_better for m in metrics}
    stl_mean, ew = summary.get("stl_mean"), summary.get("ew_method")
    ew_mean = None
    if ew:
        ew_mean = {k: summary["rows"][ew]["metrics"][k][0] for k in summary["metric_names"]}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "kind", "seed", "metric", "value", "higher_is_better", "unit"])
        units = {m.name: m.unit for m in metrics}
        for r in runs:
            for k, v in r["test"].items():
                w.writerow([dataset, r["method"], r["kind"], r["seed"], k, v, higher[k], units[k]])
            if stl_mean:
                w.writerow([dataset, r["method"], r["kind"], r["seed"], "delta_m_stl", delta_m(r["test"], stl_mean, higher, skip_zero=True), False, "%"])
            if ew_mean:
                w.writerow([dataset, r["method"], r["kind"], r["seed"], "delta_m_ew", delta_m(r["test"], ew_mean, higher, skip_zero=True), False, "%"])
            w.writerow([dataset, r["method"], r["kind"], r["seed"], "ms_per_step", r["ms_per_step"], False, "ms"])
            w.writerow([dataset, r["method"], r["kind"], r["seed"], "best_epoch", r["best_epoch"], "", ""])
        for seed, vals in stl_by_seed(stl_runs, metrics, tasks).items():
            for k, v in vals.items():
                w.writerow([dataset, "STL", "stl", seed, k, v, higher[k], units[k]])


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    path.write_text(json.dumps(payload, indent=1, default=default, allow_nan=True))


def plot_all(out: Path, runs: Sequence[Mapping[str, Any]], stl_runs: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
             metrics: Sequence[Metric], tasks: Sequence[str]) -> list[Path]:  # fmt: skip
    """weights.png (task weights over training), curves.png (validation metrics), delta_m.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    methods = list(dict.fromkeys(r["method"] for r in runs))

    def mean_curve(rs: Sequence[Mapping[str, Any]], get) -> list[float]:
        n = min(len(r["history"]) for r in rs)
        return [statistics.fmean(get(r["history"][e]) for r in rs) for e in range(n)]

    # 1. weights over training
    cols = min(4, max(1, len(methods)))
    rows_n = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3 * rows_n), squeeze=False)
    for ax, m in zip(axes.flat, methods):
        rs = [r for r in runs if r["method"] == m]
        for t, name in enumerate(tasks):
            ys = mean_curve(rs, lambda h, t=t: h["weights"][t])
            ax.plot(range(1, len(ys) + 1), ys, "o-", ms=3, label=name)
        ax.set_title(m)
        ax.set_xlabel("epoch")
        ax.set_ylabel("task weight (epoch mean)")
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "weights.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    # 2. validation curves, one panel per metric
    cols = min(4, len(metrics))
    rows_n = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3 * rows_n), squeeze=False)
    for ax, k in zip(axes.flat, metrics):
        for m in methods:
            ys = mean_curve([r for r in runs if r["method"] == m], lambda h, k=k: h["val"][k.name])
            ax.plot(range(1, len(ys) + 1), ys, "o-", ms=3, label=m)
        stl = [r for r in stl_runs if tasks[r["task"]] == k.task]
        if stl:
            ys = mean_curve(stl, lambda h, k=k: h["val"][k.name])
            ax.plot(range(1, len(ys) + 1), ys, "ko--", ms=3, label="STL")
        ax.set_title(f"{k.name} ({'higher' if k.higher_is_better else 'lower'} is better)")
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "curves.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    # 3. Δm% bar chart
    key = "delta_m_stl" if summary.get("stl_mean") else "delta_m_ew"
    rows = {m: r for m, r in summary["rows"].items() if m != "STL" and key in r}
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(rows) + 2), 3.5))
    names = sorted(rows, key=lambda m: rows[m][key][0])
    ax.bar(names, [rows[m][key][0] for m in names], yerr=[rows[m][key][1] for m in names], capsize=3,
           color=["tab:green" if rows[m][key][0] < 0 else "tab:red" for m in names])  # fmt: skip
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel(f"Δm% vs {'STL' if key == 'delta_m_stl' else 'EW'} (lower is better)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    paths.append(out / "delta_m.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths
