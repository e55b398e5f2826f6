"""``python _ddp_backward_worker.py RANK WORLD INIT_FILE OUT_DIR``: awloss.backward on this rank's shard.

Every rank builds the same model (same seed), takes rows ``rank::world`` of one global batch, runs three
steps of ``awloss.backward`` + SGD and saves the weights and parameters, twice: with a plain model, and
with the model wrapped in ``DistributedDataParallel`` and the call inside ``model.no_sync()``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import awloss

STEPS, GLOBAL_BATCH, T = 3, 12, 3


def build():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh())
    heads = nn.ModuleList([nn.Linear(8, 1) for _ in range(T)])
    x = torch.randn(GLOBAL_BATCH, 5, dtype=torch.float64)
    ys = torch.randn(T, GLOBAL_BATCH, 1, dtype=torch.float64)
    return nn.ModuleDict({"trunk": trunk, "heads": heads}).double(), x, ys


def run(rank: int, world: int, ddp: bool) -> dict:
    net, x, ys = build()
    model = net
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        class Wrapper(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                f = self.net["trunk"](x)
                return [h(f) for h in self.net["heads"]]

        model = DDP(Wrapper(net))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    agg = awloss.get("upgrad")
    rows = slice(rank, None, world)
    history = []
    for _ in range(STEPS):
        opt.zero_grad()
        if ddp:
            with model.no_sync():
                outs = model(x[rows])
                losses = [((o - y[rows]) ** 2).mean() for o, y in zip(outs, ys)]
                w = awloss.backward(losses, net["trunk"].parameters(), agg)
        else:
            f = net["trunk"](x[rows])
            losses = [((h(f) - y[rows]) ** 2).mean() for h, y in zip(net["heads"], ys)]
            w = awloss.backward(losses, net["trunk"].parameters(), agg)
        history.append(w.clone())
        opt.step()
    return {"weights": torch.stack(history), "params": {k: v.detach().clone() for k, v in net.state_dict().items()}}


def reference(world: int) -> dict:
    """One process, the concatenated batch: mean over shards of the shard-mean losses."""
    net, x, ys = build()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    agg = awloss.get("upgrad")
    history = []
    for _ in range(STEPS):
        opt.zero_grad()
        losses = []
        for t, h in enumerate(net["heads"]):
            parts = [((h(net["trunk"](x[r::world])) - ys[t][r::world]) ** 2).mean() for r in range(world)]
            losses.append(torch.stack(parts).mean())
        history.append(awloss.backward(losses, net["trunk"].parameters(), agg).clone())
        opt.step()
    return {"weights": torch.stack(history), "params": {k: v.detach().clone() for k, v in net.state_dict().items()}}


if __name__ == "__main__":
    rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    result = {"plain": run(rank, world, False), "ddp": run(rank, world, True)}
    dist.destroy_process_group()
    torch.save(result, out / f"rank{rank}.pt")
