"""Aggregate bench runs: mean ± std over seeds, Δm% vs STL, paired Δm% vs EW, mean rank; tables, CSV, JSON, PNGs."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .datasets import Metric
from .deltam import delta_m, mean_rank

__all__ = ["summarise", "format_table", "render_table", "table_cells", "write_csv", "write_json", "plot_all",
           "EW_NAMES", "FORMATS"]

EW_NAMES = ("ew", "sum", "equal", "ls")
FORMATS = {"md": "md", "latex": "tex", "csv": "csv"}  # --format → file extension


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else float("nan"))  # no spread from one seed


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
                       "delta_m_stl": (0.0, 0.0 if len(stl) > 1 else float("nan")), "ms_per_step": _mean_std([r["ms_per_step"] for r in stl_runs])}  # fmt: skip
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
        for m, rank in mean_rank(mtl, higher).items():
            rows[m]["mean_rank"] = rank
    return {"rows": rows, "stl_mean": stl_mean, "ew_method": ew, "metric_names": names,
            "convention": "Nash-MTL delta_m (flat over metrics, lower is better; vs STL mean over seeds)"}  # fmt: skip


def _fmt(ms: tuple[float, float] | None, digits: int = 3) -> str:
    if ms is None or not math.isfinite(ms[0]):
        return "-"
    m, s = ms
    scale = max(abs(m), abs(s) if math.isfinite(s) else 0.0)
    prec = max(0, digits - 1 - int(math.floor(math.log10(scale)))) if scale > 1e-12 else 2
    prec = min(prec, 4)
    mean = f"{m:.{prec}f}"
    if mean.startswith("-") and float(mean) == 0:
        mean = mean[1:]  # no "-0.00"
    return f"{mean} ± {s:.{prec}f}" if math.isfinite(s) else mean  # one seed: no "± 0.0"


def _paired(c: Mapping[str, Any] | None) -> tuple[str, str]:
    if c is None or c["n"] < 2:
        return "-", "-"
    lo, hi = c["ci"]
    return f"{c['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]", f"{c['p_holm']:.2g}" if c.get("p_holm") == c.get("p_holm") else "-"


def table_cells(summary: Mapping[str, Any], metrics: Sequence[Metric], comparisons: Mapping[str, Any] | None = None,
                quick: bool = False) -> tuple[list[str], list[list[str]]]:  # fmt: skip
    """Header and rows of the results table (one row per method, STL first)."""
    rows = summary["rows"]
    comparisons = comparisons or {}
    ew = summary.get("ew_method")
    if quick:  # a smoke test: no ranking, the order of --methods
        order = sorted(rows, key=lambda m: m != "STL")
    else:
        order = sorted(rows, key=lambda m: (m != "STL", rows[m].get("delta_m_stl", rows[m].get("delta_m_ew", (0, 0)))[0]))
    arrows = {m.name: ("↑" if m.higher_is_better else "↓") for m in metrics}
    head = ["method", "Δm% vs STL ↓", "Δm% vs EW, paired [95% CI] ↓", "p (Holm)", "MR ↓", "ms/step", "× EW", "seeds"]
    head += [f"{m.name}{' [' + m.unit + ']' if m.unit else ''} {arrows[m.name]}" for m in metrics]
    ew_ms = rows[ew]["ms_per_step"][0] if ew in rows else math.nan
    body = []
    for m in order:
        r = rows[m]
        mr = r.get("mean_rank")
        paired, p = ("baseline", "") if m == ew else _paired(comparisons.get(m, {}).get("delta_m"))
        ratio = r["ms_per_step"][0] / ew_ms if ew_ms == ew_ms and ew_ms > 0 else math.nan
        cells = [m, _fmt(r.get("delta_m_stl"), 2), paired, p, "-" if mr is None or quick else f"{mr:.2f}",
                 f"{r['ms_per_step'][0]:.1f}", "-" if ratio != ratio else f"{ratio:.2f}", str(r["seeds"])]  # fmt: skip
        cells += [_fmt(r["metrics"][k.name]) for k in metrics]
        body.append(cells)
    return head, body


def _grid(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    line: Callable[[Sequence[str]], str] = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def _notes(summary: Mapping[str, Any], quick: bool) -> str:
    out = (f"Δm%: {summary['convention']}. Paired: per seed vs ew of the same seed (same data order and init), "
           "mean over seeds, t-interval; p: paired t-test, Holm-adjusted over methods. MR: mean rank over metrics.")  # fmt: skip
    if quick:
        out += " --quick is a smoke test: the numbers are not meaningful and not ranked."
    return out


def format_table(summary: Mapping[str, Any], metrics: Sequence[Metric], title: str = "",
                 comparisons: Mapping[str, Any] | None = None, quick: bool = False) -> str:  # fmt: skip
    """Terminal table(s): Δm% vs STL, paired Δm% vs EW with its interval and p, MR, cost, per-metric mean ± std."""
    head, body = table_cells(summary, metrics, comparisons, quick)
    k = 8  # the summary columns; metrics go inline when few, else in a second block
    inline = len(metrics) <= 4
    out = ([title] if title else [])
    if inline:
        out.append(_grid(head, body))
    else:
        out += [_grid(head[:k], [b[:k] for b in body]), "", _grid([head[0], *head[k:]], [[b[0], *b[k:]] for b in body])]
    if comparisons and not quick and any(c["delta_m"]["n"] >= 2 for c in comparisons.values()):
        ph = ["vs ew, per metric"] + [m.name for m in metrics]
        pb = []
        for m, c in comparisons.items():
            cells = [m]
            for k2 in metrics:
                s = c["per_metric"].get(k2.name)
                cells.append("-" if not s or s["n"] < 2 else f"{s['mean']:+.2f}% (p {s['p_holm']:.2g})")
            pb.append(cells)
        out += ["", _grid(ph, pb) + "\n(relative difference, sign-adjusted so that negative is better; Holm p)"]
    out.append(_notes(summary, quick))
    return "\n".join(out)


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("×", r"$\times$")):  # fmt: skip
        text = text.replace(a, b)
    return text


def render_table(fmt: str, summary: Mapping[str, Any], metrics: Sequence[Metric], title: str,
                 comparisons: Mapping[str, Any] | None, quick: bool, verdict: str) -> str:  # fmt: skip
    """The results table as Markdown (``md``), LaTeX (``latex``, booktabs) or ``csv``."""
    head, body = table_cells(summary, metrics, comparisons, quick)
    if fmt == "csv":
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(head)
        w.writerows(body)
        return buf.getvalue().rstrip("\n")
    if fmt == "md":
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines + ["", _notes(summary, quick), "", verdict])
    if fmt == "latex":
        lines = [r"\begin{table}[t]", r"\centering", r"\caption{" + _tex(title) + "}", r"\small",
                 r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
                 " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]  # fmt: skip
        lines += [" & ".join(_tex(c) for c in row) + r" \\" for row in body]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", "% " + _notes(summary, quick), "% " + verdict]
        return "\n".join(lines)
    raise ValueError(f"unknown table format {fmt!r}")


def write_csv(path: Path, dataset: str, runs: Sequence[Mapping[str, Any]], stl_runs: Sequence[Mapping[str, Any]],
              summary: Mapping[str, Any], metrics: Sequence[Metric], tasks: Sequence[str]) -> None:  # fmt: skip
    """Long format: one row per method × seed × metric (test split), plus Δm%, ms/step and epoch rows."""
    higher = {m.name: m.higher_is_better for m in metrics}
    stl_mean, ew = summary.get("stl_mean"), summary.get("ew_method")
    ew_by_seed = {r["seed"]: r["test"] for r in runs if r["method"] == ew}  # paired: EW of the same seed
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "kind", "seed", "metric", "value", "higher_is_better", "unit"])
        units = {m.name: m.unit for m in metrics}
        for r in runs:
            for k, v in r["test"].items():
                w.writerow([dataset, r["method"], r["kind"], r["seed"], k, v, higher[k], units[k]])
            if stl_mean:
                w.writerow([dataset, r["method"], r["kind"], r["seed"], "delta_m_stl", delta_m(r["test"], stl_mean, higher, skip_zero=True), False, "%"])
            if r["seed"] in ew_by_seed:
                dm = delta_m(r["test"], ew_by_seed[r["seed"]], higher, skip_zero=True)
                w.writerow([dataset, r["method"], r["kind"], r["seed"], "delta_m_ew", dm, False, "%"])
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

    from .datasets._base import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=1, default=default, allow_nan=True))


def plot_all(out: Path, res: Any) -> list[Path]:
    """curves.png, weights.png, delta_m.png and summary.png (see :mod:`awloss.bench.plots`)."""
    from .plots import plot_all as _plot_all

    return _plot_all(out, res)
