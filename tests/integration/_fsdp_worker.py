"""FSDP2 worker: ``python _fsdp_worker.py RANK WORLD INIT_FILE OUT_DIR``; also imported for the 1-process reference.

Trains every loss-level method and every aggregator (through ``awloss.backward``) a few steps on a
``fully_shard``-ed model (trunk and root sharded, gloo on CPU) with this rank's shard of a global batch, and
saves the weights' history, the weighting's / aggregator's state and the model's full (gathered) state to
``OUT_DIR/rank{RANK}.pt``.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import awloss  # noqa: E402

TIMEOUT_S = 120  # gloo's own timeout: a rank left waiting in a collective raises (the test kills later)
STEPS = 4
PER_RANK = 4


def _model(distributed: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = C.TinyMTL().double()
    if distributed:
        from torch.distributed.fsdp import fully_shard

        fully_shard(model.trunk)
        fully_shard(model)
    return model


def _full_state(module: torch.nn.Module) -> dict:
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone() for k, v in module.state_dict().items()}


def _shard(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = C.make_batch(step, PER_RANK * world)
    sl = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    return x[sl], y[sl]


def run_weighting(name: str, rank: int, world: int, distributed: bool) -> dict:
    model = _model(distributed)
    w = C.make_weighting(name, model=model).double()
    opt = torch.optim.Adam([{"params": model.parameters()}, *w.param_groups(lr=0.05)], lr=0.01)
    history = []
    for step in range(STEPS):
        x, y = _shard(step, rank, world)
        C.train_step(step, lambda a, b: w(C.task_losses(model(a), b)), model, w, opt, x, y)
        history.append(w.weights.detach().clone())
    return {"weights": torch.stack(history), "w_state": {k: v.clone() for k, v in w.state_dict().items()},
            "model": _full_state(model)}


def run_aggregator(name: str, rank: int, world: int, distributed: bool) -> dict:
    model = _model(distributed)
    agg = awloss.get(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    history = []
    for step in range(STEPS):
        x, y = _shard(step, rank, world)
        opt.zero_grad()
        weights = awloss.backward(C.task_losses(model(x), y), list(model.trunk.parameters()), agg)
        opt.step()
        history.append(torch.zeros(0) if weights is None else weights.detach().clone())
    return {"weights": torch.stack(history), "model": _full_state(model),
            "agg_state": {k: v.clone() for k, v in agg.state_dict().items()}}


def absent_at(step: int, rank: int) -> set[int]:
    """Tasks given as ``None`` on ``rank`` at ``step``: one task on rank 1 at the even steps, task 2 everywhere at 3."""
    if step == 3:
        return {2}
    return {step % 3} if rank == 1 and step % 2 == 0 else set()


def run_absent(rank: int, world: int, distributed: bool, name: str = "upgrad") -> dict:
    """``awloss.backward`` with tasks absent on some ranks; ``distributed=False``: one process given every rank's
    shard, each task's loss over the rows of the ranks where it is present."""
    model = _model(distributed)
    agg = awloss.get(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ranks = [rank] if distributed else list(range(world))
    history = []
    for step in range(STEPS):
        x, y = C.make_batch(step, PER_RANK * world)
        rows = torch.cat([torch.arange(r * PER_RANK, (r + 1) * PER_RANK) for r in ranks])
        pred, y = model(x[rows]), y[rows]
        losses = []
        for i in range(pred.shape[1]):
            keep = [k for k, r in enumerate(ranks) if i not in absent_at(step, r)]
            idx = torch.cat([torch.arange(k * PER_RANK, (k + 1) * PER_RANK) for k in keep]) if keep else None
            losses.append(None if idx is None else torch.nn.functional.mse_loss(pred[idx, i], y[idx, i]))
        opt.zero_grad()
        weights = awloss.backward(losses, list(model.trunk.parameters()), agg)
        opt.step()
        history.append(weights.detach().clone())
    return {"weights": torch.stack(history), "model": _full_state(model)}


def run_all(rank: int, world: int, distributed: bool) -> dict:
    results = {}
    for kind, fn in (("weighting", run_weighting), ("aggregator", run_aggregator)):
        for name in awloss.available(kind):
            try:
                results[name] = fn(name, rank, world, distributed)
            except Exception as e:  # reported by the test, per method
                results[name] = {"error": f"{type(e).__name__}: {e}"}
    if distributed:
        try:
            results["upgrad@absent"] = run_absent(rank, world, distributed)
        except Exception as e:
            results["upgrad@absent"] = {"error": f"{type(e).__name__}: {e}"}
    return results


def main() -> None:
    import torch.distributed as dist

    rank, world, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        results = run_all(rank, world, distributed=True)
        torch.save(results, out_dir / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
