"""The figures a reader sees: integer epoch ticks, no offset notation, a log axis for weights spanning
decades, summary.png with the recommendation marked (the PNGs themselves were looked at by eye)."""

from __future__ import annotations

import pytest

from awloss.bench import plots


@pytest.fixture
def plt():
    return plots._setup()


def test_one_epoch_gets_one_integer_tick_and_no_offset(plt):
    fig, ax = plt.subplots()
    ax.plot([1], [0.4818 + 1e-5])
    ax.plot([1], [0.4818])
    plots._xlim(ax, 1)
    plots._plain(ax)
    fig.canvas.draw()
    assert list(ax.get_xticks()) == [1]
    assert ax.yaxis.get_offset_text().get_text() == ""  # the old plots showed `1e-5+4.818e-1`
    assert all("e" not in t.get_text() for t in ax.get_yticklabels())
    plt.close(fig)


def test_many_epochs_integer_ticks(plt):
    fig, ax = plt.subplots()
    ax.plot(range(1, 41), range(40))
    plots._xlim(ax, 40)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 0.5 <= t <= 40.5]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plt.close(fig)


def _run(method, seed, weights, val):
    hist = [{"epoch": e + 1, "val": {"mae_a": v, "mae_b": v}, "weights": w} for e, (w, v) in enumerate(zip(weights, val))]
    return {"method": method, "seed": seed, "task": None, "kind": "weighting", "history": hist,
            "test": {"mae_a": val[-1], "mae_b": val[-1]}, "ms_per_step": 1.0, "best_epoch": len(val)}


def test_plot_all_writes_four_figures_and_marks_the_recommendation(tmp_path, monkeypatch):
    from awloss.bench.api import Results
    from awloss.bench.datasets import Metric
    from awloss.bench.report import summarise
    from awloss.bench.verdict import compare_to_ew, recommend

    metrics = [Metric("mae_a", "a", False), Metric("mae_b", "b", False)]
    runs = [_run("ew", s, [[1, 1], [1, 1]], [2.0 + s, 1.5 + s]) for s in range(3)]
    runs += [_run("uw", s, [[1e-4, 1.0], [1e-3, 2.0]], [0.9 * (2.0 + s), (0.9 + 0.001 * s) * (1.5 + s)]) for s in range(3)]
    summary = summarise(runs, [], metrics, ["a", "b"])
    comp = compare_to_ew(runs, {"mae_a": False, "mae_b": False}, "ew")
    verdict = recommend(comp, {"ew": 1.0, "uw": 1.0}, ew="ew", n_seeds=3)
    assert verdict["method"] == "uw"
    log_panels = []
    real = plots._finish

    def spy(fig, plt_, path, title, rows):
        log_panels.extend(ax.get_title() for ax in fig.axes if ax.get_yscale() == "log")
        if path.name == "summary.png":
            labels = fig.axes[0].get_legend_handles_labels()[1]
            assert "recommended: uw" in labels
            assert "recommended: uw" in title
        return real(fig, plt_, path, title, rows)

    monkeypatch.setattr(plots, "_finish", spy)
    res = Results("toy", summary, verdict, comp, runs, [], metrics, ["a", "b"], "t", payload={"config": {"seeds": [0, 1, 2], "train": {"epochs": 2}}})
    paths = plots.plot_all(tmp_path, res)
    assert [p.name for p in paths] == ["curves.png", "weights.png", "delta_m.png", "summary.png"]
    assert log_panels == ["uw (log scale)"]  # weights spanning 4 decades; ew's constant weights stay linear
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weights_panel_says_no_weights_for_a_non_weighted_aggregator_and_shows_negative_ones(tmp_path, monkeypatch):
    """TrimmedMean/GradDrop return no weights: their panel read "every task: 0 (lines overlap)"; PBI's weights
    go below 0 (it pushes losses under its preference ray up) and were cut off at 0."""
    from awloss.bench.api import Results
    from awloss.bench.datasets import Metric
    from awloss.bench.report import summarise
    from awloss.bench.verdict import compare_to_ew, recommend

    metrics = [Metric("mae_a", "a", False), Metric("mae_b", "b", False)]
    runs = [_run("ew", s, [[1, 1], [1, 1]], [2.0 + s, 1.5 + s]) for s in range(3)]
    runs += [_run("trimmed_mean", s, [None, None], [2.1 + s, 1.4 + s]) for s in range(3)]
    runs += [_run("pbi", s, [[1.5, -0.5], [2.0, -0.8]], [2.2 + s, 1.6 + s]) for s in range(3)]
    summary = summarise(runs, [], metrics, ["a", "b"])
    comp = compare_to_ew(runs, {"mae_a": False, "mae_b": False}, "ew")
    verdict = recommend(comp, {"ew": 1.0, "trimmed_mean": 1.0, "pbi": 1.0}, ew="ew", n_seeds=3)
    panels = {}
    real = plots._finish

    def spy(fig, plt_, path, title, rows):
        if path.name == "weights.png":
            for ax in fig.axes:
                panels[ax.get_title()] = (" ".join(t.get_text() for t in ax.texts), ax.get_ylim())
        return real(fig, plt_, path, title, rows)

    monkeypatch.setattr(plots, "_finish", spy)
    res = Results("toy", summary, verdict, comp, runs, [], metrics, ["a", "b"], "t",
                  payload={"config": {"seeds": [0, 1, 2], "train": {"epochs": 2}}})
    plots.plot_all(tmp_path, res)
    assert "no task weights" in panels["trimmed_mean"][0] and "every task" not in panels["trimmed_mean"][0]
    assert panels["pbi"][1][0] <= -0.8


def test_a_run_records_no_weights_for_an_aggregator_that_returns_none(tmp_path):
    import json

    from awloss.bench.cli import main

    assert main(["bench", "--quick", "-d", "synthetic", "--methods", "ew,graddrop", "--no-progress", "--no-plots",
                 "--no-stl", "--out", str(tmp_path / "o")]) == 0  # fmt: skip
    runs = json.loads((tmp_path / "o" / "results.json").read_text())["runs"]
    by = {r["method"]: r for r in runs}
    assert all(h["weights"] is None for h in by["graddrop"]["history"])
    assert all(h["weights"] == [1.0, 1.0, 1.0] for h in by["ew"]["history"])
