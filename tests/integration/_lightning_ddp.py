"""Lightning strategy="ddp" and ModelParallelStrategy (FSDP2) on 2 CPU processes: ``python _lightning_ddp.py OUT_DIR``
(re-launched per rank by Lightning)."""

import datetime
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as H  # noqa: E402
import lightning as L  # noqa: E402

import awloss  # noqa: E402
from awloss.integrations.lightning import MultiTaskMixin  # noqa: E402


class LitMTL(MultiTaskMixin, L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = H.TinyMTL()
        self.weighting = H.make_weighting("uw")

    def task_losses(self, batch, batch_idx):
        x, y = batch
        return H.task_losses(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class LitAgg(MultiTaskMixin, L.LightningModule):
    """Gradient level: manual optimisation with awloss.backward under Lightning's DDP."""

    def __init__(self):
        super().__init__()
        self.net = H.TinyMTL()
        self.aggregator = awloss.get("upgrad")

    def task_losses(self, batch, batch_idx):
        x, y = batch
        return H.task_losses(self.net(x), y)

    def shared_parameters(self):
        return self.net.trunk.parameters()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class RankShards(torch.utils.data.Sampler):
    """Batch ``s`` of rank ``r``: samples ``16s + 8r … 16s + 8r + 7`` (so one process's batch ``s`` of 16 is their
    union, :func:`reference`); Lightning's own DistributedSampler would shuffle."""

    def __init__(self, n: int, per_rank: int = 8) -> None:
        self.n, self.per = n, per_rank

    def _rank_world(self):
        import torch.distributed as dist

        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    def __iter__(self):
        r, w = self._rank_world()
        for s in range(self.n // (self.per * w)):
            yield from range(s * self.per * w + r * self.per, s * self.per * w + (r + 1) * self.per)

    def __len__(self) -> int:
        return self.n // self._rank_world()[1]


def reference(cls, init, steps=3):
    """One process, batch ``s`` = samples ``16s … 16s + 15``: what the mixin does (weigh and step, or
    awloss.backward on the trunk and step) from ``init``; returns the module."""
    x, y = H.make_batch(0, 48, dtype=torch.float32)
    m = cls()
    m.load_state_dict(init)
    opt = m.configure_optimizers()  # (the mixin's param groups)
    for s in range(steps):
        xb, yb = x[16 * s : 16 * s + 16], y[16 * s : 16 * s + 16]
        opt.zero_grad()
        if cls is LitAgg:
            awloss.backward(H.task_losses(m.net(xb), yb), m.net.trunk.parameters(), m.aggregator)
        else:
            m.weighting(H.task_losses(m.net(xb), yb)).backward()
        opt.step()
    return m


def sharded(cls):
    """``cls`` under Lightning's ``ModelParallelStrategy`` (FSDP2): ``configure_model`` shards the trunk and the net."""

    class Sharded(cls):
        def configure_model(self):
            from torch.distributed.fsdp import fully_shard

            mesh = self.device_mesh["data_parallel"]
            fully_shard(self.net.trunk, mesh=mesh)
            fully_shard(self.net, mesh=mesh)

    return Sharded


def _full(state):
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone() for k, v in state.items()}


def _trainer(strategy, **kw):
    return L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=3, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kw)


def main():
    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    out = Path(sys.argv[1])
    timeout = datetime.timedelta(seconds=120)  # gloo's own timeout: a stuck collective raises (the test kills later)
    torch.manual_seed(0)
    x, y = H.make_batch(0, 48, dtype=torch.float32)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    model = LitMTL()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer(DDPStrategy(timeout=timeout))
    trainer.fit(model, data)
    agg_model = LitAgg()
    agg_init = {k: v.clone() for k, v in agg_model.state_dict().items()}
    agg_trainer = _trainer(DDPStrategy(timeout=timeout))
    agg_trainer.fit(agg_model, data)
    # FSDP2 in Lightning (what works instead of strategy="fsdp", which is FSDP1 and GPU-only): the same modules
    # from the same initial states, the loss-level weighting and awloss.backward on the sharded trunk
    res = {"weights": model.weighting.weights, "state": model.weighting.state_dict(), "steps": trainer.global_step,
           "agg_model": agg_model.state_dict(), "agg_steps": agg_trainer.global_step}
    for key, cls, start in (("fsdp2", LitMTL, init), ("fsdp2_agg", LitAgg, agg_init)):
        m = sharded(cls)()
        m.load_state_dict(start)
        # data_parallel_size=2: Lightning's "auto" puts both devices of one node into tensor parallelism
        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, timeout=timeout)
        t = _trainer(strategy, use_distributed_sampler=False)
        t.fit(m, torch.utils.data.DataLoader(data.dataset, batch_size=8, sampler=RankShards(48)))
        res[key] = {"model": _full(m.state_dict()), "steps": t.global_step,
                    "weights": m.weighting.weights if cls is LitMTL else m.aggregator.weights}
    res["ddp_agg_weights"] = agg_model.aggregator.weights
    res["init"], res["agg_init"] = init, agg_init
    torch.save(res, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
