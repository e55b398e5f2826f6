"""WeightLogger: CSV rows of weights and σ, TensorBoard scalars, clear errors."""

from __future__ import annotations

import csv
import sys

import pytest
import torch

import awloss
from awloss.integrations.loggers import WeightLogger, weighting_scalars


def _train_logged(tmp_path, every=1, **kw):
    uw = awloss.UncertaintyWeighting(2, task_names=["seg", "depth"])
    opt = torch.optim.Adam(uw.param_groups(lr=0.1))
    seen = []
    with WeightLogger(uw, every=every, **kw) as logger:
        for step in range(5):
            total = uw({"seg": torch.tensor(0.2), "depth": torch.tensor(5.0)})
            opt.zero_grad()
            total.backward()
            opt.step()
            if logger.log(step, loss=total.item()) is not None:
                seen.append((step, uw.weights.clone(), uw.sigma.clone()))
    return seen


def test_csv_rows_match_weights_and_sigma(tmp_path):
    path = tmp_path / "sub" / "w.csv"
    seen = _train_logged(tmp_path, every=2, csv_path=path)
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0]) == ["step", "weight/seg", "weight/depth", "sigma/seg", "sigma/depth", "loss"]
    assert [int(r["step"]) for r in rows] == [0, 2, 4] == [s for s, *_ in seen]
    for r, (_, w, sigma) in zip(rows, seen):
        assert float(r["weight/seg"]) == pytest.approx(w[0].item(), rel=1e-6)
        assert float(r["sigma/depth"]) == pytest.approx(sigma[1].item(), rel=1e-6)
    assert float(rows[-1]["weight/seg"]) > float(rows[0]["weight/seg"])  # the low-loss task gains weight


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seen = _train_logged(tmp_path, tensorboard=tmp_path / "tb")
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"weight/seg", "weight/depth", "sigma/seg", "sigma/depth", "loss"} <= set(acc.Tags()["scalars"])
    events = acc.Scalars("weight/depth")
    assert [e.step for e in events] == list(range(5))
    assert events[-1].value == pytest.approx(seen[-1][1][1].item(), rel=1e-6)


def test_explicit_weights_for_gradient_level_methods(tmp_path):
    row = weighting_scalars(weights=torch.tensor([0.25, 0.75]), task_names=["a", "b"])
    assert row == {"weight/a": 0.25, "weight/b": 0.75}


def test_bad_arguments(tmp_path, monkeypatch):
    uw = awloss.UncertaintyWeighting(2)
    with pytest.raises(ValueError, match="`every`.*0"):
        WeightLogger(uw, csv_path=tmp_path / "x.csv", every=0)
    with pytest.raises(ValueError, match="csv_path.*callback"):
        WeightLogger(uw)
    logger = WeightLogger(uw, csv_path=tmp_path / "x.csv")
    logger.log(0)
    with pytest.raises(ValueError, match="new keys.*loss"):
        logger.log(1, loss=1.0)
    logger.close()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"awloss\[tensorboard\]"):
        WeightLogger(uw, tensorboard=tmp_path / "tb")


class _FakeTracker:
    """Stands in for wandb.log / mlflow.log_metrics: records (metrics, step) exactly as those receive them."""

    def __init__(self):
        self.calls = []

    def log(self, row, step):
        self.calls.append((row, step))


def test_callback_receives_every_logged_row_for_any_tracker(tmp_path):
    uw = awloss.UncertaintyWeighting(2, task_names=["seg", "depth"])
    wandb_like, mlflow_like = _FakeTracker(), _FakeTracker()
    logger = WeightLogger(uw, every=2, callback=[lambda row, step: wandb_like.log(row, step=step), mlflow_like.log])
    for step in range(5):
        uw(torch.tensor(1.0 + step), torch.tensor(2.0))
        logger.log(step, loss=float(step))
    assert [s for _, s in wandb_like.calls] == [0, 2, 4]
    row, step = wandb_like.calls[-1]
    assert set(row) == {"weight/seg", "weight/depth", "sigma/seg", "sigma/depth", "loss"} and row["loss"] == 4.0
    assert mlflow_like.calls == wandb_like.calls
    row["loss"] = -1.0  # a tracker that mutates its row does not change what the next one receives
    assert mlflow_like.calls[-1][0]["loss"] == 4.0


def test_callback_only_logger_and_bad_callback():
    uw = awloss.UncertaintyWeighting(2)
    seen = []
    WeightLogger(uw, callback=lambda row, step: seen.append(step)).log(7)
    assert seen == [7]
    with pytest.raises(TypeError, match="`callback` must be a callable"):
        WeightLogger(uw, callback=[print, "not callable"])
