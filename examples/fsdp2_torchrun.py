"""FSDP2 (fully_shard) with torchrun: a loss-level weighting and awloss.backward, every rank in sync (CPU, gloo).

    torchrun --standalone --nproc_per_node=2 examples/fsdp2_torchrun.py

A weighting runs unchanged under FSDP2: it averages the T loss values over the ranks before weighing them.
awloss.backward takes the sharded trunk's parameters: one backward per task (FSDP2 reduce-scatters each
task's gradient into the sharded .grad), one all-reduce of the T×T Gramian, then this rank's shard of the
update is written into .grad, so optimizer.step() works as usual. Only Gramian aggregators (upgrad, mgda, ...)
are exact from the shards; the others raise NotImplementedError. Also runs as one plain process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

import awloss
from awloss.distributed import check_synchronized


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(16, 1), nn.Linear(16, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(self.trunk(x)) for head in self.heads], dim=1)


def full_params(model: nn.Module) -> torch.Tensor:
    """Every parameter gathered from its shards (a collective under FSDP2), as one vector."""
    return torch.cat([getattr(p, "full_tensor", p.detach)().detach().flatten() for p in model.parameters()])


def main() -> None:
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")  # "nccl" on GPUs, with each rank's device set
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(0)
    model = TwoHeads()
    if distributed:
        from torch.distributed.fsdp import fully_shard
        fully_shard(model.trunk)  # the trunk one FSDP unit, the heads in the root's
        fully_shard(model)
    target = torch.tensor([1.0, 10.0])

    def losses(x: torch.Tensor) -> list[torch.Tensor]:
        err = (model(x) - x[:, :2] * target) ** 2
        return [err[:, 0].mean(), err[:, 1].mean()]

    # (a) a loss-level weighting: total.backward(), FSDP2 reduce-scatters the gradients as usual
    awl = awloss.AutomaticWeightedLoss(2)
    opt = torch.optim.Adam([{"params": model.parameters()}, *awl.param_groups(lr=0.025)], lr=1e-3)
    for step in range(5):
        x = torch.randn(16, 4) + rank  # each rank sees different data
        opt.zero_grad()
        awl(losses(x)).backward()
        opt.step()
    # (b) awloss.backward on the sharded trunk: writes this rank's shard of the update into .grad
    sgd, upgrad = torch.optim.SGD(model.parameters(), lr=0.01), awloss.get("upgrad")
    trunk_before = full_params(model.trunk)
    for step in range(3):
        x = torch.randn(16, 4) + rank
        sgd.zero_grad()
        awloss.backward(losses(x), model.trunk.parameters(), upgrad)
        sgd.step()
    assert not torch.equal(full_params(model.trunk), trunk_before), "awloss.backward left the trunk's .grad empty"
    full = full_params(model)
    if distributed:
        gathered = [torch.empty_like(full) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, full)
        assert all(torch.equal(g, full) for g in gathered), "the ranks' full parameters differ"
        assert check_synchronized(awl)
        dist.barrier()  # every rank done before tearing gloo down
    print(f"rank {rank}: weights in sync on every rank ({full.numel()} parameters): "
          f"awl {awl.weights.tolist()}, upgrad {upgrad.weights.tolist()}")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
