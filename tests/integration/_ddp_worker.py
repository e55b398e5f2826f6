"""DDP worker: ``python _ddp_worker.py RANK WORLD INIT_FILE OUT_DIR``; also imported for the 1-process reference.

Trains every registered loss-level method a few steps on this rank's shard of a global batch and saves
the weights' history, the weighting's state and the model's state to ``OUT_DIR/rank{RANK}.pt``.
Gradient-level methods join through ``awloss.backward`` once it exists.
"""

from __future__ import annotations

import datetime
import contextlib
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import awloss  # noqa: E402

TIMEOUT_S = 120  # gloo's own timeout: a rank left waiting in a collective raises (the test kills later)
STEPS = 6
PER_RANK = 4


class Holder(nn.Module):
    """Model and weighting in one module, so that DDP wraps both."""

    def __init__(self, model: nn.Module, w: nn.Module) -> None:
        super().__init__()
        self.model, self.w = model, w

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.w(C.task_losses(self.model(x), y))


def _micro_batches(step: int, rank: int, world: int) -> list:
    """This rank's shards of 2 micro-batches of ``PER_RANK * world`` samples each."""
    x, y = C.make_batch(step, 2 * PER_RANK * world)
    out = []
    for m in range(2):
        lo = m * PER_RANK * world + rank * PER_RANK
        out.append((x[lo : lo + PER_RANK], y[lo : lo + PER_RANK]))
    return out


def run(name: str, variant: str, rank: int, world: int, distributed: bool) -> dict:
    """``variant``: "outside" (DDP wraps the model only), "inside" (DDP wraps model + weighting),
    "rankseed" (outside, built from a different seed on every rank), "accum" (outside, gradient accumulation
    with ``no_sync()``) or "nosync" (``sync=False``)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    # "rankseed": every rank builds from its own seed; DDP and the weighting's first synced call copy rank 0's
    model, w, opt = C.build(name, seed=rank if variant == "rankseed" else 0)
    if variant == "nosync":
        w.sync = False
    if variant == "inside":
        holder = Holder(model, w)
        net = DDP(holder) if distributed else holder

        def forward(x, y):
            return net(x, y)

    else:
        net = DDP(model) if distributed else model

        def forward(x, y):
            return w(C.task_losses(net(x), y))

    history = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(STEPS):
            if variant == "accum":  # gradient accumulation over 2 micro-batches, the first under no_sync()
                opt.zero_grad()
                for m, (xm, ym) in enumerate(_micro_batches(step, rank, world)):
                    with net.no_sync() if distributed and m == 0 else contextlib.nullcontext():
                        (forward(xm, ym) / 2).backward()
                opt.step()
                if C.has_update(w):
                    with torch.no_grad():
                        w.update(C.task_losses(model(xm), ym))
                if step % 3 == 2:
                    w.step()
            else:
                x, y = C.make_batch(step, PER_RANK * world)
                sl = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
                C.train_step(step, forward, model, w, opt, x[sl], y[sl])
            history.append(w.weights.clone())
    return {
        "weights": torch.stack(history),
        "w_state": {k: v.clone() for k, v in w.state_dict().items()},
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "warnings": [str(m.message) for m in caught],
    }


def run_aggregator(name: str, rank: int, world: int, distributed: bool, accum: bool = False) -> dict:
    """Gradient level: ``awloss.backward(losses, shared_params, aggregator)`` with a DDP-wrapped model."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = C.TinyMTL().double()
    agg = awloss.get(name)
    net = DDP(model) if distributed else model
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    history = []
    for step in range(STEPS):
        opt.zero_grad()
        if accum:  # 2 micro-batches, the first under no_sync(): awloss.backward syncs every call anyway
            for m, (xm, ym) in enumerate(_micro_batches(step, rank, world)):
                with net.no_sync() if distributed and m == 0 else contextlib.nullcontext():
                    losses = [loss / 2 for loss in C.task_losses(net(xm), ym)]
                    weights = awloss.backward(losses, list(model.trunk.parameters()), agg)
        else:
            x, y = C.make_batch(step, PER_RANK * world)
            sl = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
            weights = awloss.backward(C.task_losses(net(x[sl]), y[sl]), list(model.trunk.parameters()), agg)
        opt.step()
        history.append(torch.zeros(0) if weights is None else weights.detach().clone())  # None: GradDrop
    return {"weights": torch.stack(history), "model": {k: v.clone() for k, v in model.state_dict().items()},
            "agg_state": {k: v.clone() for k, v in agg.state_dict().items()}}


def run_all(rank: int, world: int, distributed: bool) -> dict:
    results = {}
    for name in awloss.available("weighting"):
        for variant in ("outside", "inside", "rankseed", "accum", "nosync"):
            if variant in ("nosync", "rankseed") and not distributed:
                continue
            try:
                results[(name, variant)] = run(name, variant, rank, world, distributed)
            except Exception as e:  # reported by the test, per method
                results[(name, variant)] = {"error": f"{type(e).__name__}: {e}"}
    if hasattr(awloss, "backward"):
        for name in awloss.available("aggregator"):
            for variant, accum in (("aggregator", False), ("aggregator-accum", True)):
                try:
                    results[(name, variant)] = run_aggregator(name, rank, world, distributed, accum)
                except Exception as e:
                    results[(name, variant)] = {"error": f"{type(e).__name__}: {e}"}
    return results


def main() -> None:
    import torch.distributed as dist

    rank, world, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        results = run_all(rank, world, distributed=True)
        # weighting state must be bit-identical: check it collectively too
        torch.save(results, out_dir / f"rank{rank}.pt")
        dist.barrier()  # every rank done before gloo is torn down (else a rank may abort at exit)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
