"""DDP worker for ranks that disagree: ``python _ddp_disagree_worker.py RANK WORLD INIT_FILE OUT_DIR CASE...``.

Each case makes the ranks disagree in one way (key order, a NaN on one rank, a different task count, ``None``
or a shared parameter on one rank only, ``update()`` on one rank only), catches what the bad step raises —
as a training loop that skips a bad batch would — and then runs one *good* synchronised step, which only
completes if the ranks are still in step. Results go to ``OUT_DIR/rank{RANK}.pt`` after every case, so a
case that hangs (the process group's timeout is short) still leaves the earlier ones.
"""

from __future__ import annotations

import datetime
import sys
import traceback
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import awloss  # noqa: E402

TIMEOUT_S = 60  # gloo's own timeout (also the rendezvous's): a rank left waiting in a collective raises after this


def _err(e: BaseException) -> dict:
    return {"type": type(e).__name__, "msg": " ".join([str(e), *getattr(e, "__notes__", [])])}


def _good_weighting_step(w, rank: int) -> torch.Tensor:
    """One synced call that every rank makes alike: returns the weights (equal on every rank iff in step)."""
    losses = {n: torch.tensor(1.0 + rank + i, requires_grad=True) for i, n in enumerate(w.task_names or "ab")}
    if w.task_names is None:
        losses = list(losses.values())
    w(losses)
    return w.weights.detach().clone()


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Module()
    net.trunk = nn.Linear(3, 4).double()
    net.extra = nn.Linear(4, 4).double()  # a shared layer some ranks may skip
    net.heads = nn.ModuleList(nn.Linear(4, 1).double() for _ in range(3))
    return net


def _task_losses(net: nn.Module, rank: int, tasks: int = 3, skip_extra: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(10 + rank)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    h = torch.tanh(net.trunk(x))
    if not skip_extra:
        h = h + torch.tanh(net.extra(h))
    return [net.heads[i](h).pow(2).mean() * (i + 1) for i in range(tasks)]


def _outcome(net: nn.Module, agg, losses: list, heads: list | None) -> dict:
    """One ``awloss.backward`` on the trunk and ``net.extra``: its weights and every ``.grad``, or the error."""
    try:
        w = awloss.backward(losses, [*net.trunk.parameters(), *net.extra.parameters()], agg, task_params=heads)
    except Exception as e:
        return {"bad": _err(e)}
    return {"bad": None, "weights": w.clone(), "grads": [None if p.grad is None else p.grad.clone() for p in net.parameters()]}


def _good_backward_step(net: nn.Module, rank: int, agg) -> dict:
    net.zero_grad()
    w = awloss.backward(_task_losses(net, rank), [*net.trunk.parameters(), *net.extra.parameters()], agg)
    return {"weights": w.clone(), "grads": [p.grad.clone() for p in net.parameters()]}


ABSENT_STEPS = 6
PER_RANK = 4
# The methods with state or parameters (what a wrong average would corrupt), SI and STCH (they read the values
# themselves), and SI built without num_tasks ("@free": the header travels first, then values and presence).
# The stateless rest share the same synchronised vector; each method costs ~0.6 s of the default suite here.
ABSENT_METHODS = [
    *(n for n in awloss.available("weighting")
      if awloss.get_class(n).learnable or awloss.get_class(n).stateful or n in ("si", "stch")),
    "si@free",
]


def absent_at(step: int, rank: int) -> set[int]:
    """The tasks given as ``None`` on ``rank`` at ``step``: one task on rank 1 at the even steps, and at step 3
    task 2 on every rank."""
    if step == 3:
        return {2}
    return {step % 3} if rank == 1 and step % 2 == 0 else set()


def _present_losses(pred: torch.Tensor, y: torch.Tensor, step: int, ranks: list[int]) -> list:
    """Per-task MSE over the rows of the ranks where the task is present (``pred``, ``y``: ``ranks``' shards in
    order), ``None`` where it is present on none."""
    out = []
    for i in range(pred.shape[1]):
        rows = [k for k, r in enumerate(ranks) if i not in absent_at(step, r)]
        if not rows:
            out.append(None)
            continue
        idx = torch.cat([torch.arange(k * PER_RANK, (k + 1) * PER_RANK) for k in rows])
        out.append(torch.nn.functional.mse_loss(pred[idx, i], y[idx, i]))
    return out


def absent_train(name: str, rank: int, world: int, distributed: bool) -> dict:
    """Train ``name`` with tasks absent on some ranks (:func:`absent_at`), the model wrapped by DDP. With
    ``distributed=False``: one process given every rank's shard, each task's loss over the present ranks' rows."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model, w, opt = C.build(name.removesuffix("@free"))
    if name.endswith("@free"):  # no `num_tasks`: the header travels first, then the values (and presence)
        w = awloss.get(name.removesuffix("@free")).double()
    net = DDP(model, find_unused_parameters=True) if distributed else model  # a head is unused where absent
    ranks = [rank] if distributed else list(range(world))
    history = []
    for step in range(ABSENT_STEPS):
        x, y = C.make_batch(step, PER_RANK * world)
        rows = torch.cat([torch.arange(r * PER_RANK, (r + 1) * PER_RANK) for r in ranks])
        x, y = x[rows], y[rows]
        total = w(_present_losses(net(x), y, step, ranks))
        opt.zero_grad()
        total.backward()
        opt.step()
        if C.has_update(w):
            with torch.no_grad():
                w.update(_present_losses(model(x), y, step, ranks))
        if step % 3 == 2:
            w.step()
        history.append(w.weights.detach().clone())
    return {"weights": torch.stack(history), "w_state": {k: v.clone() for k, v in w.state_dict().items()},
            "model": {k: v.clone() for k, v in model.state_dict().items()}}


def count_collectives(rank: int) -> dict:
    """The collectives of one step (after a first call: agreement and broadcast) as ``[(name, numel)]``."""
    import torch.distributed as dist

    log: list = []
    names = ("all_reduce", "all_gather_object", "broadcast", "all_gather", "barrier")
    orig = {n: getattr(dist, n) for n in names}

    def wrap(n):  # noqa: ANN001, ANN202
        def f(t=None, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            log.append((n, t.numel() if isinstance(t, torch.Tensor) else 0))
            return orig[n](t, *a, **k) if t is not None else orig[n](*a, **k)
        return f

    t = lambda v: torch.tensor(float(v), requires_grad=True)  # noqa: E731
    out: dict = {}
    uw, si, famo = awloss.get("uw", num_tasks=3), awloss.get("si"), awloss.get("famo", num_tasks=3)
    net = _net()

    def bw(absent: bool) -> None:
        ls = _task_losses(net, rank)
        if absent and rank == 1:
            ls[2] = None
        awloss.backward(ls, net.trunk.parameters(), awloss.get("upgrad"),
                        task_params=[*net.extra.parameters(), *net.heads.parameters()])

    steps = {
        "uw": lambda: uw([t(1), t(2), t(3)]),
        "uw_absent": lambda: uw([t(1), t(2), t(3) if rank == 0 else None]),
        "si_free": lambda: si([t(1), t(2), t(3)]),
        "si_free_absent": lambda: si([t(1), t(2), t(3) if rank == 0 else None]),
        "famo_update": lambda: famo.update(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)),
        "backward": lambda: bw(False),
        "backward_absent": lambda: bw(True),
    }
    famo([t(1), t(2), t(3)])
    try:
        for n in names:
            setattr(dist, n, wrap(n))
        for key, step in steps.items():
            step()
            log.clear()
            step()
            out[key] = list(log)
    finally:
        for n in names:
            setattr(dist, n, orig[n])
    return out


def case(name: str, rank: int, world: int) -> dict:
    out: dict = {}
    t = lambda v: torch.tensor(float(v), requires_grad=True)  # noqa: E731
    if name == "w_key_order":  # rank 0 builds {"a", "b"}, rank 1 {"b", "a"}
        w = awloss.get("si")
        a, b = t(1.0 + 2 * rank), t(100.0 + 200 * rank)  # means over 2 ranks: a = 2, b = 200
        w({"a": a, "b": b} if rank == 0 else {"b": b, "a": a})
        out["names"] = w.task_names
        out["weights"] = w.weights.detach().clone()
        uw = awloss.get("uw", num_tasks=2)
        la, lb = t(1.0 + 2 * rank), t(100.0 + 200 * rank)
        uw({"a": la, "b": lb} if rank == 0 else {"b": lb, "a": la}).backward()
        out["uw_grad"] = uw.log_var.grad.clone()
        out["uw_names"] = uw.task_names
        uw2 = awloss.get("uw", num_tasks=2)  # later calls keep the agreed order
        uw2({"a": la, "b": lb})
        out["later"] = uw({"a": la, "b": lb} if rank == 0 else {"b": lb, "a": la}).detach()
    elif name == "w_nan_one_rank":
        w = awloss.get("uw", num_tasks=2)
        w({"a": t(1.0), "b": t(2.0)})
        try:
            w({"a": t(1.0), "b": t(float("nan") if rank == 1 else 2.0)})
            out["bad"] = None
        except Exception as e:
            out["bad"] = _err(e)
        out["good"] = _good_weighting_step(w, rank)
    elif name == "w_count_fixed":  # a weighting of 2 tasks given 3 on rank 1
        w = awloss.get("uw", num_tasks=2)
        w(t(1.0), t(2.0))
        try:
            w(*([t(1.0), t(2.0)] + ([t(3.0)] if rank == 1 else [])))
            out["bad"] = None
        except Exception as e:
            out["bad"] = _err(e)
        out["good"] = _good_weighting_step(w, rank)
    elif name == "w_count_free":  # a weighting without num_tasks: 2 losses on rank 0, 3 on rank 1
        w = awloss.get("si")
        w(t(1.0), t(2.0))
        try:
            w(*([t(1.0), t(2.0)] + ([t(3.0)] if rank == 1 else [])))
            out["bad"] = None
        except Exception as e:
            out["bad"] = _err(e)
        out["good"] = _good_weighting_step(w, rank)
    elif name == "w_names_differ":  # first call: {"a", "b"} on rank 0, {"a", "c"} on rank 1
        w = awloss.get("uw", num_tasks=2)
        try:
            w({"a": t(1.0), ("b" if rank == 0 else "c"): t(2.0)})
            out["bad"] = None
        except Exception as e:
            out["bad"] = _err(e)
    elif name == "w_none_one_rank":  # a task absent on rank 1 only: same layout, no error
        w = awloss.get("uw", num_tasks=2)
        w({"a": t(1.0), "b": t(3.0) if rank == 0 else None})
        out["weights"] = w.weights.detach().clone()
        out["good"] = _good_weighting_step(w, rank)
    elif name == "w_absent_train":  # every loss-level method, tasks absent on some ranks (see absent_at)
        for method in ABSENT_METHODS:
            try:
                out[method] = absent_train(method, rank, world, distributed=True)
            except Exception as e:  # noqa: BLE001 - reported by the test, per method
                out[method] = {"error": _err(e)}
    elif name == "collectives":
        out = count_collectives(rank)
    elif name == "w_update_one_rank":  # FAMO.update() on rank 0 only, then the next step's call
        w = awloss.get("famo", num_tasks=2)
        w(t(1.0), t(2.0))
        try:
            if rank == 0:
                w.update(torch.tensor(0.9), torch.tensor(1.9))
            w(t(1.0), t(2.0))
            out["bad"] = None
        except Exception as e:
            out["bad"] = _err(e)
    elif name == "b_key_order":
        net, agg = _net(), awloss.get("upgrad")
        ls = _task_losses(net, rank)
        d = {"a": ls[0], "b": ls[1], "c": ls[2]}
        if rank == 1:
            d = {"c": ls[2], "a": ls[0], "b": ls[1]}
        try:
            awloss.backward(d, net.trunk.parameters(), agg, task_params=[*net.extra.parameters(), *net.heads.parameters()])
            out["bad"] = None
        except Exception as e:
            out["bad"] = _err(e)
        out["good"] = _good_backward_step(net, rank, agg)
    elif name == "b_nan_one_rank":
        net, agg = _net(), awloss.get("upgrad")
        ls = _task_losses(net, rank)
        if rank == 1:
            ls[1] = ls[1] * float("nan")
        try:
            awloss.backward(ls, [*net.trunk.parameters(), *net.extra.parameters()], agg)
            out["bad"] = None
        except Exception as e:
            out["bad"] = _err(e)
        out["good"] = _good_backward_step(net, rank, agg)
    elif name == "b_count":
        net, agg = _net(), awloss.get("upgrad")
        try:
            ls = _task_losses(net, rank, tasks=3 if rank == 0 else 2)
            awloss.backward(ls, [*net.trunk.parameters(), *net.extra.parameters()], agg)
            out["bad"] = None
        except Exception as e:
            out["bad"] = _err(e)
        out["good"] = _good_backward_step(net, rank, agg)
    elif name in ("b_none_one_rank", "b_none_one_rank_auto"):  # task 2 absent on rank 1
        net, agg = _net(), awloss.get("upgrad")
        ls = _task_losses(net, rank)
        if rank == 1:
            ls[2] = None
        out = _outcome(net, agg, ls, None if name.endswith("auto") else list(net.heads.parameters()))
        out["good"] = _good_backward_step(net, rank, agg)
    elif name == "b_shared_one_rank":  # `net.extra` (shared) is used on rank 0 only
        net, agg = _net(), awloss.get("upgrad")
        out = _outcome(net, agg, _task_losses(net, rank, skip_extra=rank == 1), list(net.heads.parameters()))
        out["good"] = _good_backward_step(net, rank, agg)
    elif name == "b_tiny_task_f32":  # float32; task 1's loss x 1e-22 on both ranks (its squared norm underflows
        net, agg = _net().float(), awloss.get("upgrad")  # float32's range), task 2 absent on rank 1
        g = torch.Generator().manual_seed(10 + rank)
        h = torch.tanh(net.trunk(torch.randn(6, 3, generator=g)))
        h = h + torch.tanh(net.extra(h))
        ls: list = [net.heads[i](h).pow(2).mean() * (1e-22 if i == 1 else 1.0) for i in range(3)]
        if rank == 1:
            ls[2] = None
        out = _outcome(net, agg, ls, list(net.heads.parameters()))
    else:
        raise ValueError(name)
    return out


def main() -> None:
    import torch.distributed as dist

    rank, world, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    results: dict = {}
    try:
        for name in sys.argv[5:]:
            try:
                results[name] = case(name, rank, world)
            except Exception as e:  # noqa: BLE001 - reported by the test
                results[name] = {"crash": _err(e), "tb": traceback.format_exc()[-2000:]}
            torch.save(results, out_dir / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
