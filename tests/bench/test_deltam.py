"""Δm% (Nash-MTL convention) and mean rank against hand-computed values."""

import math

import pytest

from awloss.bench.deltam import delta_m, mean_rank
from awloss.bench.datasets._metrics import auc


def test_delta_m_hand_example():
    # Two accuracies (higher is better) and two MAEs (lower is better), computed by hand:
    #   acc_a: 90 vs 80  -> -(90-80)/80 = -0.125
    #   acc_b: 70 vs 70  ->  0
    #   mae_a: 1.5 vs 2  -> (1.5-2)/2   = -0.25
    #   mae_b: 3.3 vs 3  -> (3.3-3)/3   = +0.1
    #   mean = (-0.125 + 0 - 0.25 + 0.1) / 4 = -0.06875 -> -6.875 %
    higher = {"acc_a": True, "acc_b": True, "mae_a": False, "mae_b": False}
    m = {"acc_a": 90.0, "acc_b": 70.0, "mae_a": 1.5, "mae_b": 3.3}
    b = {"acc_a": 80.0, "acc_b": 70.0, "mae_a": 2.0, "mae_b": 3.0}
    assert delta_m(m, b, higher) == pytest.approx(-6.875)
    assert delta_m(b, b, higher) == 0.0


def test_delta_m_is_flat_over_metrics_not_per_task():
    # one task with 3 metrics, one with 1: flat mean gives each metric weight 1/4 (LibMTL would give 1/6 and 1/2)
    higher = {"a1": False, "a2": False, "a3": False, "b": False}
    base = dict.fromkeys(higher, 1.0)
    assert delta_m({"a1": 2.0, "a2": 1.0, "a3": 1.0, "b": 1.0}, base, higher) == pytest.approx(25.0)


def test_delta_m_errors():
    with pytest.raises(ValueError, match="is 0"):
        delta_m({"x": 1.0}, {"x": 0.0}, {"x": True})
    with pytest.raises(KeyError, match="missing"):
        delta_m({}, {"x": 1.0}, {"x": True})


def test_mean_rank():
    table = {"a": {"acc": 90.0, "mae": 1.0}, "b": {"acc": 80.0, "mae": 0.5}, "c": {"acc": 80.0, "mae": 2.0}}
    r = mean_rank(table, {"acc": True, "mae": False})
    # acc: a 1, b/c tie 2.5; mae: b 1, a 2, c 3
    assert r == {"a": 1.5, "b": 1.75, "c": 2.75}


def test_auc_matches_sklearn_with_ties():
    sk = pytest.importorskip("sklearn.metrics")
    import torch

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (500,), generator=g).float()  # many ties
    labels = (torch.rand(500, generator=g) < 0.3).float()
    assert auc(scores, labels) == pytest.approx(sk.roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)
    assert math.isnan(auc(scores, torch.zeros(500)))
