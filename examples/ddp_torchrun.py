"""DDP with torchrun: a loss-level weighting and awloss.backward, every rank in sync (CPU, gloo).

    torchrun --standalone --nproc_per_node=2 examples/ddp_torchrun.py

Nothing to add to a DDP script: a weighting averages the loss values over the ranks before weighing them
(one all-reduce of T numbers), so every rank learns the same weights; awloss.backward averages the per-task
gradients of the shared parameters, so every rank applies the update one process would make on the
concatenated batch. Also runs as a plain one-process script.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import awloss
from awloss.distributed import check_synchronized


def main() -> None:
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")  # "nccl" on GPUs
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    model = DDP(net) if distributed else net
    uw = awloss.UncertaintyWeighting(2, task_names=["a", "b"])
    opt = torch.optim.Adam([{"params": model.parameters()}, *uw.param_groups(lr=0.025)], lr=1e-3)
    for step in range(5):
        x = torch.randn(16, 4) + rank                            # each rank sees different data
        err = (model(x) - x[:, :2] * torch.tensor([1.0, 10.0])) ** 2
        opt.zero_grad()
        uw({"a": err[:, 0].mean(), "b": err[:, 1].mean()}).backward()
        opt.step()
    sgd, upgrad = torch.optim.SGD(model.parameters(), lr=0.01), awloss.get("upgrad")
    for step in range(3):
        x = torch.randn(16, 4) + rank
        err = (model(x) - x[:, :2]) ** 2
        sgd.zero_grad()
        awloss.backward([err[:, 0].mean(), err[:, 1].mean()], net[0].parameters(), upgrad)
        sgd.step()
    if distributed:
        assert check_synchronized(uw) and check_synchronized(model)
        dist.barrier()                                           # every rank done before tearing gloo down
    print(f"rank {rank}: weights in sync on every rank: uw {uw.weights_dict()}, upgrad {upgrad.weights.tolist()}")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
