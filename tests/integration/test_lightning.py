"""Lightning: MultiTaskMixin with Trainer(fast_dev_run=…) on CPU, param groups, per-step logging, DDP."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import awloss

L = pytest.importorskip("lightning")
from awloss.integrations.lightning import MultiTaskMixin  # noqa: E402

import _awloss_engines_common as H  # registered by conftest.py  # noqa: E402

HERE = Path(__file__).resolve().parent

NAMES = awloss.available("weighting")
TASKS = ["a", "b", "c"]


def loader(n=32, batch=8):
    x, y = H.make_batch(0, n, dtype=torch.float32)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


class LitMTL(MultiTaskMixin, L.LightningModule):
    def __init__(self, method: str = "uw", explicit_groups: bool = False):
        super().__init__()
        self.net = H.TinyMTL()
        self.weighting = H.make_weighting(method, model=self.net)
        self.explicit_groups = explicit_groups

    def task_losses(self, batch, batch_idx):
        x, y = batch
        return dict(zip(TASKS, H.task_losses(self.net(x), y)))

    def configure_optimizers(self):
        if self.explicit_groups:
            groups = [{"params": self.net.parameters()}, *self.weighting.param_groups(lr=0.5)]
            return torch.optim.Adam(groups, lr=1e-2)
        return torch.optim.Adam(self.parameters(), lr=1e-2, weight_decay=1e-4)  # the common trap


def _trainer(**kw):
    kw.setdefault("logger", False)
    return L.Trainer(accelerator="cpu", devices=1, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_fast_dev_run_weights_and_param_groups(name):
    model = LitMTL(name)
    before = {k: v.clone() for k, v in model.weighting.state_dict().items()}
    trainer = _trainer(fast_dev_run=2)
    trainer.fit(model, loader())
    opt = trainer.optimizers[0]
    wids = {id(p) for p in model.weighting.parameters()}
    if wids:  # learnable: their own group, own LR, no weight decay, and they trained
        (group,) = [g for g in opt.param_groups if any(id(p) in wids for p in g["params"])]
        assert {id(p) for p in group["params"]} == wids
        assert group["lr"] == 0.025 and group["weight_decay"] == 0.0
        assert any(not torch.equal(v, before[k]) for k, v in model.weighting.state_dict().items())
    assert all(any(id(p) in {id(q) for q in g["params"]} for g in opt.param_groups) for p in model.net.parameters())
    metrics = trainer.callback_metrics
    for t in TASKS:
        torch.testing.assert_close(metrics[f"weight/{t}"], model.weighting.weights[TASKS.index(t)].float())


def test_explicit_param_groups_are_respected():
    model = LitMTL("uw", explicit_groups=True)
    trainer = _trainer(fast_dev_run=1)
    trainer.fit(model, loader())
    lrs = sorted(g["lr"] for g in trainer.optimizers[0].param_groups)
    assert lrs == [1e-2, 0.5]


def test_weights_logged_every_step_to_csv(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    model = LitMTL("uw")
    trainer = _trainer(max_steps=4, logger=CSVLogger(tmp_path, name="run"), log_every_n_steps=1)
    trainer.fit(model, loader())
    rows = list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r.get("weight/a")]
    assert steps == [0, 1, 2, 3]
    assert {"sigma/a", "weight/c", "loss"} <= set(rows[0])
    last = [r for r in rows if r.get("weight/a")][-1]
    assert float(last["weight/b"]) == pytest.approx(model.weighting.weights[1].item(), rel=1e-6)


def test_missing_task_losses_is_a_clear_error():
    class NoLosses(MultiTaskMixin, L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weighting = awloss.UncertaintyWeighting(2)

    with pytest.raises(NotImplementedError, match="task_losses"):
        NoLosses().training_step(None, 0)


@pytest.mark.skipif(not hasattr(awloss, "backward"), reason="awloss.backward (gradient level) not merged yet")
@pytest.mark.parametrize("name", awloss.available("aggregator"))
def test_manual_optimisation_with_aggregator(name):
    class LitAgg(MultiTaskMixin, L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = H.TinyMTL()
            self.aggregator = awloss.get(name)

        def task_losses(self, batch, batch_idx):
            x, y = batch
            return dict(zip(TASKS, H.task_losses(self.net(x), y)))

        def shared_parameters(self):
            return self.net.trunk.parameters()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    model = LitAgg()
    assert model.automatic_optimization is False
    before = [p.clone() for p in model.net.parameters()]
    trainer = _trainer(fast_dev_run=2, precision="bf16-mixed")
    trainer.fit(model, loader())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net.parameters()))
    if getattr(model.aggregator, "weighted", True):
        assert all(f"weight/{t}" in trainer.callback_metrics for t in TASKS)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One run of ``_lightning_ddp.py`` on 2 CPU processes (DDP, then FSDP2 through ModelParallelStrategy); gloo's
    timeout is 120 s there, and the run is killed after 300 s."""
    tmp_path = tmp_path_factory.mktemp("lightning2")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
           "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(HERE / "_lightning_ddp.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_ddp_two_cpu_processes(two_ranks):
    r0, r1 = two_ranks
    assert torch.equal(r0["weights"], r1["weights"])
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["steps"] == r1["steps"] == 3
    assert r0["agg_steps"] == r1["agg_steps"] == 3  # upgrad in manual optimisation, same model on both ranks
    for k in r0["agg_model"]:
        assert torch.equal(r0["agg_model"][k], r1["agg_model"][k]), k


@pytest.mark.parametrize("key", ["fsdp2", "fsdp2_agg"])
def test_fsdp2_model_parallel_strategy_two_cpu_processes(two_ranks, key):
    """What works instead of strategy="fsdp" (FSDP1, GPU-only in Lightning): ModelParallelStrategy with a
    `configure_model` that calls fully_shard, on CPU with gloo: the weighting, and an aggregator through
    awloss.backward on the sharded trunk; the same on both ranks and equal to one process on the union of the
    ranks' batches."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("_awloss_lightning_ddp", HERE / "_lightning_ddp.py")
    LD = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(LD)
    r0, r1 = two_ranks
    a, b = r0[key], r1[key]
    assert a["steps"] == b["steps"] == 3
    assert torch.equal(a["weights"], b["weights"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    cls = LD.LitMTL if key == "fsdp2" else LD.LitAgg
    ref = LD.reference(cls, r0["init"] if key == "fsdp2" else r0["agg_init"])
    ref_w = ref.weighting.weights if key == "fsdp2" else ref.aggregator.weights
    torch.testing.assert_close(a["weights"], ref_w, rtol=1e-5, atol=1e-6)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(a["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.equal(a["model"]["net.trunk.0.weight"], r0["agg_init" if key == "fsdp2_agg" else "init"]["net.trunk.0.weight"])


def test_fsdp_strategy_on_cpu_is_lightnings_clear_error():
    """Lightning's strategy="fsdp" is FSDP1 and needs CUDA: on CPU the Trainer refuses it itself, naming the GPU
    accelerator; on CPU use ModelParallelStrategy (FSDP2, above) or strategy="ddp"."""
    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        L.Trainer(accelerator="cpu", devices=2, strategy="fsdp")


def test_fsdp_strategy_with_aggregator_is_a_clear_error():
    """Lightning's strategy="fsdp" is FSDP1 (GPU only in Lightning): awloss.backward cannot take per-task
    gradients of its flat parameters, so the mixin says so and names what works (before: a cryptic setStorage
    RuntimeError or "shared_params is empty")."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    class LitAgg(MultiTaskMixin, L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = H.TinyMTL()
            self.aggregator = awloss.get("upgrad")

        def task_losses(self, batch, batch_idx):
            x, y = batch
            return H.task_losses(self.net(x), y)

    model = LitAgg()
    model._trainer = SimpleNamespace(strategy=FSDPStrategy())
    x, y = H.make_batch(0, 4, dtype=torch.float32)
    with pytest.raises(NotImplementedError, match="FSDP1.*fully_shard.*strategy='ddp'"):
        model.training_step((x, y), 0)
