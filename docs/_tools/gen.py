"""Generate the registry-driven parts of the docs: the "choosing a method" tables and one page per method.

Used by ``docs/_tools/hooks.py`` at build time (so a new registered method gets a row and a page with no
docs edit) and by ``tests/docs``. Facts in ``NOTES`` come from the papers and the benchmark studies in
the team's research notes (outside this repository); a method without
a note still gets a row, with its docstring's summary line and first reference.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COSTS = ROOT / "docs" / "data" / "step_costs.json"

KIND_TITLES = {"weighting": "Loss level", "aggregator": "Gradient level"}

# name -> (paper, url, when it helps). Keep it honest: what the benchmarks say, not what the abstracts say.
NOTES: dict[str, tuple[str, str, str]] = {
    # ---- loss level
    "sum": ("equal weighting (baseline)", "",
            "The baseline to beat. Often as good as anything on tasks of similar loss scale, "
            "especially with a tuned learning rate (Kurin et al. 2022, Xin et al. 2022)."),
    "mean": ("equal weighting, 1/T", "", "As `sum`, with the learning rate divided by T."),
    "constant": ("hand-tuned weights", "",
                 "You already know good weights (e.g. from a grid search) and want them fixed."),
    "uw": ("Kendall, Gal & Cipolla, CVPR 2018", "https://arxiv.org/abs/1705.07115",
           "Loss scales differ by orders of magnitude (QM9: Δm 108 vs 178 for equal weights; CityScapes: "
           "5.9 vs 22.6, best of all methods in Nash-MTL's table). ≈ equal weighting on NYUv2, Office. "
           "Give its parameters their own LR."),
    "awl": ("Liebel & Körner, arXiv 2018", "https://arxiv.org/abs/1805.06334",
            "As `uw`, but small losses are damped (weight ≈ 1/√(2L) instead of 1/(2L)) and the total "
            "stays positive. The seed's module: keep it to reproduce old runs."),
    "si": ("scale-invariant Σ log L (Navon et al., ICML 2022)", "https://arxiv.org/abs/2202.01017",
           "What `uw` converges to at equilibrium, without the lag: weight 1/L. Good when scales differ "
           "(QM9 Δm 77.8), worse than `uw` on CityScapes (14.1)."),
    "gls": ("Chennupati et al., CVPR-W 2019", "https://arxiv.org/abs/1904.08492",
            "Geometric mean of the losses, scale invariant like `si`; one of the few methods above "
            "single-task on NYUv2 in the DB-MTL paper's LibMTL runs."),
    "dwa": ("Liu, Johns & Davison, CVPR 2019", "https://arxiv.org/abs/1803.10704",
            "Tasks learn at very different speeds; needs epochs of history. Modest: NYUv2 Δm 3.6 vs "
            "5.6 for equal weights, CityScapes 21.5 vs 22.6."),
    "rlw": ("Lin et al., TMLR 2022", "https://arxiv.org/abs/2111.10603",
            "A random-weights control; mixed results (NYUv2 Δm 7.8 vs 5.6 for equal weights, CelebA 5.2 vs 6.3)."),
    "imtl_l": ("Liu et al., ICLR 2021", "https://openreview.net/forum?id=IMPnRXEWpvr",
               "Learned scales that equalise the scaled losses; scale invariant, like `si`."),
    "uwso": ("Kirchdorfer et al., GCPR 2024", "https://arxiv.org/abs/2408.07985",
             "Uncertainty weighting without its inertia: the analytic optimum 1/L from the current losses, "
             "softened by a tempered softmax."),
    "famo": ("Liu et al., NeurIPS 2023", "https://arxiv.org/abs/2306.03792",
             "Balances the rates at which the losses fall at loss-level cost (plus a forward pass to "
             "recompute the losses for `update()`); close to the best gradient-level methods (CelebA Δm 4.72, "
             "QM9 58.5)."),
    "gradnorm": ("Chen et al., ICML 2018", "https://arxiv.org/abs/1711.02257",
                 "Balances gradient norms of the last shared layer; needs that layer, costs one extra "
                 "gradient per task on it."),
    "stch": ("Lin et al., ICML 2024", "https://arxiv.org/abs/2402.19078",
             "Smooth Tchebycheff scalarisation: focuses on the worst-off task; for finding Pareto trade-offs."),
    "pbi": ("Zhang & Li, IEEE TEC 2007", "https://ieeexplore.ieee.org/document/4358754",
            "One chosen trade-off (a preference ray), reachable also on non-convex parts of the front; "
            "sweep the preference to trace the front. Not a method to balance tasks automatically: with a "
            "uniform preference on QM9's 11 tasks its weights go negative for the losses under the ray "
            "(Δm +444 vs +9.5 for EW in our bench)."),
    "cosmos": ("Ruchte & Grabocka, ICDM 2021", "https://arxiv.org/abs/2103.13392",
               "Pareto-front approximation with one model conditioned on the preference; on its own, a "
               "weighted sum nudged toward the preference direction."),
    # ---- gradient level
    "grad_sum": ("sum of the task gradients (baseline)", "", "Baseline; equals `sum` at T× the cost."),
    "grad_mean": ("mean of the task gradients (baseline)", "", "Baseline; equals `mean` at T× the cost."),
    "mgda": ("Sener & Koltun, NeurIPS 2018", "https://arxiv.org/abs/1810.04650",
             "Finds a common descent direction (Pareto stationarity). Often favours the easiest task: "
             "CityScapes Δm 44.1 (worst), NYUv2 1.4."),
    "pcgrad": ("Yu et al., NeurIPS 2020", "https://arxiv.org/abs/2001.06782",
               "Conflicting gradients (negative cosine); leaves non-conflicting ones untouched. NYUv2 Δm 4.0."),
    "cagrad": ("Liu et al., NeurIPS 2021", "https://arxiv.org/abs/2110.14048",
               "Conflicting gradients with a guarantee of converging to the average-loss optimum. NYUv2 Δm 0.2."),
    "imtl_g": ("Liu et al., ICLR 2021", "https://openreview.net/forum?id=IMPnRXEWpvr",
               "Equal projections of the update on every task gradient; closed form. NYUv2 Δm −0.8, QM9 77.2."),
    "nash_mtl": ("Navon et al., ICML 2022", "https://arxiv.org/abs/2202.01017",
                 "Bargaining solution; best Δm in its paper (NYUv2 −4.0, QM9 62.0). Solved on the device "
                 "here, so it costs what the other aggregators cost (LibMTL's cvxpy version: 50–60× a plain step)."),
    "graddrop": ("Chen et al., NeurIPS 2020", "https://arxiv.org/abs/2010.06808",
                 "Sign conflicts between tasks; drops gradient components by sign consistency."),
    "gradvac": ("Wang et al., ICLR 2021", "https://arxiv.org/abs/2010.05874",
                "Many related tasks (multilingual); aligns gradient similarity to a running target."),
    "aligned_mtl": ("Senushkin et al., CVPR 2023", "https://arxiv.org/abs/2305.19000",
                    "Ill-conditioned task gradients; aligns their principal components."),
    "upgrad": ("Quinton & Rey, 2024", "https://arxiv.org/abs/2406.16232",
               "Non-conflicting update that stays close to the mean; TorchJD's recommended aggregator."),
    "dualproj": ("Quinton & Rey, 2024", "https://arxiv.org/abs/2406.16232",
                 "Projects the mean gradient onto the dual cone: non-conflicting, one QP per step."),
    "config": ("Liu et al., ICLR 2025", "https://arxiv.org/abs/2408.11104",
               "Conflict-free update with equal cosine to every task gradient (from physics-informed NNs)."),
    "dbmtl": ("Lin et al., 2023", "https://arxiv.org/abs/2308.12029",
              "Log-losses plus gradient-norm balancing; the best method in its own LibMTL benchmark."),
    "grad_constant": ("fixed gradient weights (TorchJD Constant)", "",
                      "Fixed weights at the gradient level; a baseline, or to replay a TorchJD run."),
    "grad_random": ("Lin et al., TMLR 2022", "https://arxiv.org/abs/2111.10603",
                    "A random-weights control at the gradient level (as `rlw`, at T× the cost)."),
    "trimmed_mean": ("Yin et al., ICML 2018", "https://proceedings.mlr.press/v80/yin18a.html",
                     "A few rows may be outliers or corrupted (federated workers); robust per coordinate. "
                     "Not an MTL method: with few tasks it discards most of the information. Needs "
                     "T ≥ 2·trim_number + 1 (the default trims 1: three tasks); a sort per coordinate, so it "
                     "costs 6× (9×) the T-backward floor at T = 10 (32), as TorchJD's."),
    "fairgrad": ("Ban & Ji, ICML 2024", "https://arxiv.org/abs/2402.15638",
                 "Conflicting tasks with a chosen fairness: α = 1 is Nash-MTL's equation, larger α favours the "
                 "worst-off task. Conflict-free; one Newton solve per step. Best method in our QM9 bench "
                 "(Δm +2.7 vs +9.5 for EW and +3.4 for `nash_mtl`, 3 seeds, 6 epochs)."),
    "pcd": ("Varam et al., TMLR 2026", "https://openreview.net/forum?id=HT01yGHLEt",
            "One main task (row 0) and auxiliary tasks that must still make a little progress (τ); "
            "the update follows the main task otherwise."),
    "excess_mtl": ("He et al., ICML 2024", "https://proceedings.mlr.press/v235/he24n.html",
                   "Tasks with label noise or irreducible loss: weights follow the estimated excess risk, not the "
                   "raw loss. Keeps a T × n buffer of squared gradients. With the defaults (η = 1, no warm-up, "
                   "as TorchJD and LibMTL) the weights went one-hot on one task within an epoch in our QM9 and "
                   "Census benches (QM9 Δm +58 vs +9.5 for EW; +34 with one epoch of warm-up): try a smaller "
                   "`robust_step_size`."),
    "moco": ("Fernando et al., ICLR 2023", "https://openreview.net/forum?id=dLAYGdKTi2",
             "Stochastic MGDA without its bias: tracked gradients and one weight step per batch; "
             "keeps a T × n buffer. Worse than EW in our QM9 bench with the paper's defaults (Δm +96 vs +9.5)."),
    "modo": ("Chen et al., NeurIPS 2023", "https://arxiv.org/abs/2305.20057",
             "Stochastic MGDA weights from two independent batches (here: this and the previous step)."),
    "sdmgrad": ("Xiao et al., NeurIPS 2023", "https://arxiv.org/abs/2305.18409",
                "MGDA pulled toward the mean gradient (λ = 0.3), two-batch stochastic weights."),
    "cr_mogm": ("Zhou et al., NeurIPS 2022", "",
                "Smooths the noisy per-batch weights of MGDA-style methods (stochastic bias); costs what the "
                "wrapped method costs."),
    "krum": ("Blanchard et al., NeurIPS 2017", "",
             "Byzantine-robust selection of the most central gradients (federated learning); in MTL it "
             "follows one task per step, so expect it to underperform the mean. With two tasks "
             "(n_byzantine = 0) both are equally central and it is the mean."),
}


@dataclass
class Method:
    name: str
    cls: type
    kind: str
    path: str  # the object mkdocstrings documents, e.g. "awloss.UncertaintyWeighting"
    aliases: tuple[str, ...]
    learnable: bool
    stateful: bool
    summary: str
    paper: str
    url: str
    when: str

    @property
    def page(self) -> str:
        return f"methods/{self.name}.md"


def _plain(text: str) -> str:
    """reST roles of a docstring line -> Markdown (``:math:`x``` -> ``$x$``, other roles -> code)."""
    text = re.sub(r":math:`([^`]+)`", r"$\1$", text)
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)


def _first_reference(doc: str) -> tuple[str, str]:
    m = re.search(r"References:\s*\n(.*?)(?:\n\s*\n|\Z)", doc, flags=re.S)
    if not m:
        return "", ""
    text = " ".join(m.group(1).split())
    url = re.search(r"https?://\S+?(?=[\s,;)]|\.?$)", text)
    return text.split(". ")[0], url.group(0) if url else ""


def methods(kind: str | None = None) -> list[Method]:
    """Every registered method (``awloss.available()``), with its metadata, in registry order."""
    import awloss

    out = []
    order = {n: i for i, n in enumerate(NOTES)}  # baselines first, then roughly by family
    for name in sorted(awloss.available(kind), key=lambda n: (order.get(n, len(order)), n)):
        cls = awloss.get_class(name)
        doc = cls.__doc__ or ""
        public = getattr(awloss, cls.__name__, None) is cls
        path = f"awloss.{cls.__name__}" if public else f"{cls.__module__}.{cls.__qualname__}"
        paper, url, when = NOTES.get(name, ("", "", ""))
        ref_paper, ref_url = _first_reference(doc)
        paper, url = paper or ref_paper, ref_url or url  # the docstring's own link wins
        summary = _plain(doc.strip().splitlines()[0].strip()) if doc.strip() else ""
        out.append(
            Method(
                name=name, cls=cls, kind=getattr(cls, "kind", "weighting"), path=path,
                aliases=tuple(getattr(cls, "aliases", ())), learnable=bool(getattr(cls, "learnable", False)),
                stateful=bool(getattr(cls, "stateful", False)), summary=summary, paper=paper, url=url,
                when=when or summary,
            )
        )
    return out


def load_costs() -> dict:
    """``{"meta": {...}, "rows": {name: {tasks(str): ratio}}}`` from docs/data/step_costs.json (may be empty)."""
    if not COSTS.exists():
        return {"meta": {}, "rows": {}}
    return json.loads(COSTS.read_text(encoding="utf-8"))


def _cost(costs: dict, name: str) -> str:
    row = costs.get("rows", {}).get(name)
    if not row:
        return "not measured"
    return " / ".join(f"{row[t]:.2f}×" if t in row else "–" for t in ("2", "10"))


def _yes(flag: bool) -> str:
    return "yes" if flag else "–"


def choosing_table(kind: str, page_prefix: str = "") -> str:
    """The Markdown table of the methods of one ``kind``, linking each to its page."""
    costs = load_costs()
    rows = [
        "| method | learnable | stateful | step cost<br>T = 2 / 10 | paper | when it helps |",
        "|---|:-:|:-:|:-:|---|---|",
    ]
    for m in methods(kind):
        paper = f"[{m.paper}]({m.url})" if m.url else m.paper
        link = f"[`{m.name}`]({page_prefix}{m.page})<br><small>{m.cls.__name__}</small>"
        when = m.when.replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| {link} | {_yes(m.learnable)} | {_yes(m.stateful)} | {_cost(costs, m.name)} | {paper} | {when} |"
        )
    if len(rows) == 2:
        return "*No method of this level is registered yet.*"
    return "\n".join(rows)


def cost_note() -> str:
    meta = load_costs().get("meta", {})
    if not meta:
        return "not measured yet: run `PYTHONPATH=src python docs/scripts/measure_costs.py`."
    return (
        f"the time of one training step with the method divided by the time with a plain "
        f"`sum(losses).backward()`, measured in the same run ({meta.get('setup', '')}; torch {meta.get('torch', '?')}, {meta.get('threads', 1)} thread, "
        f"{meta.get('date', '')}). {meta.get('note', '')}"
    ).strip()


def method_page(m: Method) -> str:
    """The Markdown source of one method's page (its docstring comes in through mkdocstrings)."""
    level = KIND_TITLES.get(m.kind, m.kind)
    aliases = ", ".join(f"`{a}`" for a in m.aliases) or "–"
    paper = f"[{m.paper}]({m.url})" if m.url else (m.paper or "–")
    costs = load_costs()
    learn = " — give `param_groups(lr=...)` to your optimizer" if m.learnable else ""
    state = " — kept in `state_dict()`, cleared by `reset()`" if m.stateful else ""
    lines = [
        f"# {m.cls.__name__}",
        "",
        '!!! abstract "At a glance"',
        "",
        f"    - **build by name:** `awloss.get(\"{m.name}\", ...)`; aliases {aliases}",
        f"    - **level:** {level}",
        f"    - **learnable:** {_yes(m.learnable)}{learn}",
        f"    - **stateful:** {_yes(m.stateful)}{state}",
        f"    - **step cost** vs. a plain sum, T = 2 / 10: {_cost(costs, m.name)}",
        f"    - **paper:** {paper}",
        f"    - **when it helps:** {m.when}",
        "",
        "    Compare it with the others in [Choosing a method](../choosing.md).",
        "",
        f"::: {m.path}",
        "    options:",
        "      show_root_heading: true",
        "      show_root_toc_entry: false",
        "      heading_level: 2",
        "",
    ]
    return "\n".join(lines)


def nav_sections() -> list[dict]:
    """Nav entries for the generated pages, one section per level."""
    out = []
    for kind, title in KIND_TITLES.items():
        pages = [{m.cls.__name__: m.page} for m in methods(kind)]
        if pages:
            out.append({title: pages})
    return out


def rewrite_reference_fences(markdown: str) -> str:
    """```` ```py-ref title="LibMTL" ```` -> a highlighted Python block titled as a non-executed reference."""

    def repl(m: re.Match[str]) -> str:
        title = m.group(2) or "Reference"
        return f'{m.group(1)}```python title="{title} (reference, not executed)"'

    return re.sub(r'^(\s*)```py-ref(?:\s+title="([^"]*)")?\s*$', repl, markdown, flags=re.M)


README = ROOT / "README.md"


def readme_section(heading: str, demote: int = 1) -> str | None:
    """The ``## heading`` section of README.md (without its heading), sub-headings demoted; None if absent.

    Relative links into the repository (not pages of this site) become code spans, so ``--strict`` does
    not flag them.
    """
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    m = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if not m:
        return None
    body = m.group(1).strip("\n")
    if demote:
        body = re.sub(r"^(#{3,6}) ", lambda h: "#" * (len(h.group(1)) - demote) + " ", body, flags=re.M)
    body = re.sub(r"\[([^\]]+)\]\((?!https?://|#)([^)]+)\)", r"\1 (`\2`)", body)
    return body


def api_if_importable(path: str) -> str:
    """A mkdocstrings directive for ``path`` if that module/object imports, else an empty string."""
    import importlib

    module, _, attr = path, "", ""
    try:
        importlib.import_module(module)
    except ImportError:
        module, _, attr = path.rpartition(".")
        try:
            if not hasattr(importlib.import_module(module), attr):
                return ""
        except ImportError:
            return ""
    return f"::: {path}\n"


def expand_placeholders(markdown: str, page_uri: str = "") -> str:
    """Fill every ``<!-- awloss:... -->`` placeholder of a page (see hooks.py)."""
    prefix = "../" * page_uri.count("/")
    markdown = re.sub(
        r"<!--\s*awloss:methods-table\s+(\w+)\s*-->", lambda m: choosing_table(m.group(1), prefix), markdown
    )
    markdown = markdown.replace("<!-- awloss:cost-note -->", cost_note())

    def section(m: re.Match[str]) -> str:
        body = readme_section(m.group(1).strip())
        return body if body is not None else f"*(The README has no “{m.group(1).strip()}” section yet.)*"

    markdown = re.sub(r"<!--\s*awloss:readme-section\s+(.+?)\s*-->", section, markdown)
    markdown = markdown.replace("<!-- awloss:bench-results -->", bench_results(page_uri))
    markdown = markdown.replace("<!-- awloss:libmtl-map -->", libmtl_map(page_uri))
    markdown = re.sub(r"<!--\s*awloss:api\s+([\w.]+)\s*-->", lambda m: api_if_importable(m.group(1)), markdown)
    return rewrite_reference_fences(markdown)


BENCH = ROOT / "docs" / "assets" / "bench"


def bench_results(page_uri: str = "") -> str:
    """The committed ``awloss bench`` results (docs/assets/bench/<run>/{summary.md,*.png}), in folder order."""
    prefix = "../" * page_uri.count("/")
    runs = sorted(p for p in BENCH.glob("*") if p.is_dir()) if BENCH.exists() else []
    if not runs:
        return "*No `awloss bench` results are committed yet.*"
    out = []
    for run in runs:
        summary = run / "summary.md"
        out.append(summary.read_text(encoding="utf-8").strip() if summary.exists() else f"### {run.name}")
        for png, alt in (("delta_m.png", "Δm% per method"), ("weights.png", "task weights over training"),
                         ("curves.png", "validation metrics over training")):
            if (run / png).exists():
                out.append(f"![{alt}]({prefix}assets/bench/{run.name}/{png})")
    return "\n\n".join(out)


# LibMTL weighting class -> awloss registry names (None: not implemented here).
LIBMTL = {
    "EW": ["sum"], "UW": ["uw"], "GradNorm": ["gradnorm"], "MGDA": ["mgda"], "DWA": ["dwa"], "GLS": ["gls"],
    "GradDrop": ["graddrop"], "PCGrad": ["pcgrad"], "GradVac": ["gradvac"], "IMTL": ["imtl_l", "imtl_g"],
    "CAGrad": ["cagrad"], "Nash_MTL": ["nash_mtl"], "RLW": ["rlw"], "Aligned_MTL": ["aligned_mtl"],
    "DB_MTL": ["dbmtl"], "STCH": ["stch"], "FAMO": ["famo"], "UPGrad": ["upgrad"], "MoCo": None,
    "ExcessMTL": None, "FairGrad": None, "MoDo": None, "SDMGrad": None,
}


def libmtl_map(page_uri: str = "") -> str:
    import awloss

    prefix = "../" * page_uri.count("/")
    have = set(awloss.available())
    rows = ["| LibMTL `weighting=` | awloss |", "|---|---|"]
    for lib, ours in LIBMTL.items():
        if not ours or not set(ours) & have:
            cell = "not in awloss (yet)"
        else:
            cell = " + ".join(f"[`{n}`]({prefix}methods/{n}.md)" if n in have else f"`{n}` (not yet)" for n in ours)
        rows.append(f"| `{lib}` | {cell} |")
    return "\n".join(rows)
