"""The verdict: Student-t tails against SciPy, Holm, pairing by seed, and the Recommendation line's cases."""

from __future__ import annotations

import math

import pytest

from awloss.bench.verdict import compare_to_ew, holm, paired_t, recommend, t_quantile, t_sf


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 250])
def test_t_tails_and_quantiles_match_scipy(df):
    stats = pytest.importorskip("scipy.stats")
    for t in (0.0, 0.05, 0.7, 1.0, 2.5, 4.3, 12.0, 300.0):
        assert t_sf(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9, abs=1e-14)
    for q in (0.9, 0.975, 0.995):
        assert t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-9)


def test_paired_t_matches_scipy_and_edge_cases():
    stats = pytest.importorskip("scipy.stats")
    d = [-1.2, -0.4, -2.5, 0.3, -1.1]
    r, ref = paired_t(d), stats.ttest_1samp(d, 0.0)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9) and r["t"] == pytest.approx(ref.statistic, rel=1e-12)
    lo, hi = ref.confidence_interval()
    assert r["ci"] == pytest.approx([lo, hi], rel=1e-9)
    assert math.isnan(paired_t([1.0])["p"]) and paired_t([1.0])["n"] == 1  # nothing to test from one seed
    assert paired_t([0.0, 0.0, 0.0])["p"] == 1.0  # identical to EW on every seed
    assert paired_t([2.0, 2.0])["p"] == 0.0 and paired_t([2.0, 2.0])["ci"] == [2.0, 2.0]
    assert paired_t([1.0, float("nan"), 3.0])["n"] == 2  # a NaN seed is left out, not propagated


def test_holm():
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    out = holm({"a": 0.2, "b": float("nan")})
    assert out["a"] == 0.2 and math.isnan(out["b"])


def _runs(method_acc, ew_acc):
    runs = [{"method": "ew", "seed": s, "test": {"acc": a}} for s, a in enumerate(ew_acc)]
    return runs + [{"method": "m", "seed": s, "test": {"acc": a}} for s, a in enumerate(method_acc)]


def test_pairing_by_seed_removes_the_seed_luck():
    """+1 point on every seed while seeds differ by 20 points: unpaired it is noise, paired it is a clear win."""
    ew = [50.0, 70.0, 90.0, 60.0, 80.0]
    comp = compare_to_ew(_runs([a + 1 for a in ew], ew), {"acc": True}, "ew")
    s = comp["m"]["delta_m"]
    assert s["n"] == 5 and s["mean"] < 0 and s["ci"][1] < 0 and s["p_holm"] < 0.001
    v = recommend(comp, {"ew": 10.0, "m": 15.0}, ew="ew", n_seeds=5)
    assert v["method"] == "m" and v["better"] == ["m"]
    assert v["text"].startswith("Recommendation: m: beats ew beyond seed noise")
    assert "1.50x ew's time per step" in v["text"] and "paired t-test over 5 seeds" in v["text"]


def test_noise_gives_ew_and_names_the_closest():
    ew = [50.0, 70.0, 90.0]
    comp = compare_to_ew(_runs([51.0, 68.0, 91.0], ew), {"acc": True}, "ew")
    v = recommend(comp, {"ew": 10.0, "m": 10.0}, ew="ew", n_seeds=3)
    assert v["method"] == "ew" and not v["better"]
    assert v["text"].startswith("Recommendation: ew: no method beats ew beyond seed noise on this data")
    assert "closest: m" in v["text"] and "use ew, or uw if loss scales differ" in v["text"]


def test_worse_beyond_noise_is_said():
    ew = [50.0, 70.0, 90.0, 60.0]
    comp = compare_to_ew(_runs([a - 5 for a in ew], ew), {"acc": True}, "ew")
    v = recommend(comp, {"ew": 1.0, "m": 1.0}, ew="ew", n_seeds=4)
    assert v["worse"] == ["m"] and "Worse than ew beyond noise: m" in v["text"]


def test_refusals():
    comp = compare_to_ew(_runs([51.0], [50.0]), {"acc": True}, "ew")
    one = recommend(comp, {"ew": 1.0, "m": 1.0}, ew="ew", n_seeds=1)
    assert one["method"] is None and "single seed cannot tell a method from seed noise" in one["text"]
    quick = recommend(comp, {"ew": 1.0}, ew="ew", n_seeds=3, quick=True)
    assert quick["method"] is None and "smoke test" in quick["text"] and "not ranked" in quick["text"]
    no_ew = recommend({}, {}, ew=None, n_seeds=3)
    assert no_ew["method"] is None and "add ew to --methods" in no_ew["text"]
    for v in (one, quick, no_ew):
        assert v["text"].startswith("Recommendation: none: ")


def test_holm_over_many_methods_is_stricter_than_one_test():
    ew = [50.0, 70.0, 90.0]
    runs = [{"method": "ew", "seed": s, "test": {"acc": a}} for s, a in enumerate(ew)]
    deltas = {"m0": [0.9, 1.1, 1.0]}
    deltas |= {f"n{i}": [0.3 * (-1) ** i, -0.2, 0.1 * i] for i in range(6)}
    for m, d in deltas.items():
        runs += [{"method": m, "seed": s, "test": {"acc": a + dd}} for s, (a, dd) in enumerate(zip(ew, d))]
    comp = compare_to_ew(runs, {"acc": True}, "ew")
    assert comp["m0"]["delta_m"]["p_holm"] > comp["m0"]["delta_m"]["p"]
    assert all(c["delta_m"]["p_holm"] >= c["delta_m"]["p"] for c in comp.values())
