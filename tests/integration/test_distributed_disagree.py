"""DDP with ranks that disagree (issue 11 §5): every rank gets the same answer or the same error, never a hang.

One pair of gloo processes runs every case of ``_ddp_disagree_worker.py`` in turn; its process group times
out after 60 s, and the whole run is killed after 300 s, so a regression fails instead of hanging. After each
bad step the worker runs a good synchronised step, which completes only if the ranks are still in step.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import awloss

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
WORKER = HERE / "_ddp_disagree_worker.py"
CASES = [
    "w_key_order", "w_nan_one_rank", "w_count_fixed", "w_count_free", "w_names_differ", "w_none_one_rank",
    "w_update_one_rank", "w_absent_train", "collectives", "b_key_order", "b_nan_one_rank", "b_count", "b_none_one_rank", "b_none_one_rank_auto",
    "b_shared_one_rank", "b_tiny_task_f32",
]


def _worker():
    spec = importlib.util.spec_from_file_location("_awloss_ddp_disagree_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp_disagree")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), "{r}", "2", str(tmp / "rendezvous"), str(tmp), *CASES]
    procs = [subprocess.Popen([c.format(r=r) for c in cmd], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            logs.append("(killed after 300 s)")
    out = []
    for r in range(2):
        f = tmp / f"rank{r}.pt"
        out.append(torch.load(f, weights_only=False) if f.exists() else {})
    out.append({"logs": logs})
    return out


def _case(ranks, name):
    got = []
    for r in range(2):
        res = ranks[r].get(name)
        assert res is not None, f"rank {r} never finished case {name!r} (hang?): {ranks[2]['logs'][r][-2000:]}"
        assert "crash" not in res, f"rank {r}, case {name!r}: {res['crash']}\n{res.get('tb', '')}"
        got.append(res)
    return got


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _both_raise(got, kind, *words):
    for r, res in enumerate(got):
        bad = res["bad"]
        assert bad is not None, f"rank {r} did not raise"
        assert bad["type"] == kind, f"rank {r} raised {bad}"
        for w in words:
            assert w in bad["msg"], f"rank {r}: {w!r} not in {bad['msg']!r}"
    if "good" in got[0]:  # the next, good step: the ranks are still in step
        assert _same(got[0]["good"], got[1]["good"])


def test_weighting_mapping_in_other_key_order_is_aligned_by_name(ranks):
    """Before: rank 1's dict {"b", "a"} was averaged position-wise with rank 0's {"a", "b"} (SI weights 0.0066,
    0.0194 on both ranks); now the names are aligned: a = mean(1, 3) = 2, b = mean(100, 300) = 200."""
    r0, r1 = _case(ranks, "w_key_order")
    for res in (r0, r1):
        assert res["names"] == ("a", "b") and res["uw_names"] == ("a", "b")
        torch.testing.assert_close(res["weights"], torch.tensor([1 / 2, 1 / 200]))
        # UW ("log", s = 0): ∂/∂s_i of ½e^{-s}L_i + ½s is ½ − ½L_i
        torch.testing.assert_close(res["uw_grad"], torch.tensor([0.5 - 1.0, 0.5 - 100.0]))
    assert _same(r0, r1)


def test_weighting_nan_on_one_rank_raises_on_every_rank(ranks):
    """Before: rank 1 raised ValueError, rank 0 blocked in the all-reduce until the timeout."""
    _both_raise(_case(ranks, "w_nan_one_rank"), "ValueError", "Loss `b` must be finite", "rank 1")


def test_weighting_wrong_count_on_one_rank_raises_on_every_rank(ranks):
    _both_raise(_case(ranks, "w_count_fixed"), "ValueError", "Expected 2 losses", "rank 1")
    _both_raise(_case(ranks, "w_count_free"), "RankMismatchError", "tasks 2", "tasks 3")


def test_weighting_other_names_on_one_rank_raises_on_every_rank(ranks):
    _both_raise(_case(ranks, "w_names_differ"), "RankMismatchError", "['a', 'b']", "['a', 'c']")


def test_weighting_task_absent_on_one_rank(ranks):
    r0, r1 = _case(ranks, "w_none_one_rank")
    assert _same(r0, r1)


@pytest.fixture(scope="module")
def absent_reference() -> dict:
    W = _worker()
    return {m: W.absent_train(m, rank=0, world=2, distributed=False) for m in W.ABSENT_METHODS}


@pytest.mark.parametrize("method", _worker().ABSENT_METHODS)
def test_weighting_task_absent_on_some_ranks_equals_one_process_on_the_present_data(ranks, absent_reference, method):
    """Before: a task None on one rank was averaged as a loss of 0 on that rank (UW, SI, DWA, FAMO… learned from
    half the loss, and the model's gradient of that task was halved). Now each task's loss is averaged over the
    ranks where it is present (its gradient scaled to match), a task absent on every rank stays absent: the
    weights, the weighting's state and the DDP model equal one process given the present ranks' data."""
    r0, r1 = _case(ranks, "w_absent_train")
    got0, got1, ref = r0[method], r1[method], absent_reference[method]
    assert "error" not in got0 and "error" not in got1, (got0.get("error"), got1.get("error"))
    assert _same(got0, got1), "the ranks disagree"
    torch.testing.assert_close(got0["weights"], ref["weights"], rtol=1e-9, atol=1e-12)
    for part in ("w_state", "model"):
        for k in ref[part]:
            torch.testing.assert_close(got0[part][k], ref[part][k], rtol=1e-9, atol=1e-12, msg=f"{part}[{k}]")


def test_update_on_one_rank_only_is_detected(ranks):
    """Before: `if rank == 0: famo.update(...)` hung both ranks; now both raise, naming update()."""
    _both_raise(_case(ranks, "w_update_one_rank"), "RankMismatchError", "FAMO.update", "FAMO.call")


def test_backward_mapping_in_other_key_order_raises_on_every_rank(ranks):
    _both_raise(_case(ranks, "b_key_order"), "RankMismatchError", "['a', 'b', 'c']", "['c', 'a', 'b']")


def test_backward_nan_on_one_rank_raises_on_every_rank(ranks):
    _both_raise(_case(ranks, "b_nan_one_rank"), "ValueError", "Loss `losses[1]` must be finite", "rank 1")


def test_backward_other_task_count_raises_on_every_rank(ranks):
    _both_raise(_case(ranks, "b_count"), "RankMismatchError", "tasks 3", "tasks 2")


def test_backward_heads_found_differently_raise_on_every_rank(ranks):
    _both_raise(_case(ranks, "b_none_one_rank_auto"), "RankMismatchError", "task_params=")


def _expected(name: str) -> list[torch.Tensor]:
    """One process: each task's gradients averaged over the ranks where it is present (a shared parameter a
    rank does not reach counts as 0 there), aggregated; the heads get ``Σᵢ`` of those task means."""
    W = _worker()
    net = W._net()
    shared = [*net.trunk.parameters(), *net.extra.parameters()]
    heads = list(net.heads.parameters())
    rows: list[list[torch.Tensor]] = [[], [], []]
    head_rows: list[list[list[torch.Tensor]]] = [[], [], []]
    for rank in range(2):
        ls = W._task_losses(net, rank, skip_extra=name == "b_shared_one_rank" and rank == 1)
        for i, loss in enumerate(ls):
            if name == "b_none_one_rank" and rank == 1 and i == 2:
                continue  # absent on rank 1: its row is rank 0's alone
            gs = torch.autograd.grad(loss, shared + heads, retain_graph=True, allow_unused=True)
            zs = [torch.zeros_like(p) if g is None else g for g, p in zip(gs, shared + heads)]
            rows[i].append(torch.cat([g.reshape(-1) for g in zs[: len(shared)]]))
            head_rows[i].append(zs[len(shared):])
    update = awloss.get("upgrad")(torch.stack([sum(r) / len(r) for r in rows]))
    out, off = [], 0
    for p in shared:
        out.append(update[off : off + p.numel()].view(p.shape))
        off += p.numel()
    return out + [sum(sum(h[k] for h in hr) / len(hr) for hr in head_rows) for k in range(len(heads))]


@pytest.mark.parametrize("name", ["b_none_one_rank", "b_shared_one_rank"])
def test_backward_task_or_shared_parameter_on_one_rank_is_zero_filled(ranks, name):
    """Before: "Received data size doesn't match" on one rank, the other hung; then the absent task's row was
    zero-filled on its rank and averaged with it (half of rank 0's row). Now: the same update on both ranks,
    equal to the aggregate of each task's row averaged over the ranks where it is present (a shared parameter a
    present task does not reach on a rank counts as 0 there), the heads receiving the sum of those means."""
    r0, r1 = _case(ranks, name)
    assert r0["bad"] is None and r1["bad"] is None, (r0["bad"], r1["bad"])
    assert _same(r0["grads"], r1["grads"]) and _same(r0["weights"], r1["weights"])
    for got, want in zip(r0["grads"], _expected(name)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_backward_float32_task_whose_squared_norm_underflows_counts_on_every_rank(ranks):
    """float32, task 1's gradient ~1e-22 on both ranks (its squared norm underflows float32), task 2 absent on
    rank 1. Before: task 1 was taken for absent (weight 0). Now both ranks redo the reduced Jacobian's Gramian in
    float64 (the same data on both: the same choice, no collective depends on it) and agree bit for bit."""
    r0, r1 = _case(ranks, "b_tiny_task_f32")
    assert r0["bad"] is None and r1["bad"] is None, (r0["bad"], r1["bad"])
    assert _same(r0["grads"], r1["grads"]) and _same(r0["weights"], r1["weights"])
    w = r0["weights"]
    assert w.dtype == torch.float32 and (w > 0).all(), w
    assert all(g is None or torch.isfinite(g).all() for g in r0["grads"])


def test_collectives_per_step(ranks):
    """The cost of a synchronised step, as documented in :mod:`awloss.distributed` (T = 3; the Jacobian's
    all-reduce: 3 tasks × 16 shared numbers + 35 task-specific numbers + 10 used flags = 93). The presence of the tasks
    rides the existing all-reduces: no collective is added. Before: uw [6], si_free [3, 3], famo_update [6],
    backward [4, 3, 3, 93], the same with a task absent (then averaged as a loss of 0)."""
    r0, r1 = _case(ranks, "collectives")
    assert r0 == r1
    ar = lambda *sizes: [("all_reduce", n) for n in sizes]  # noqa: E731
    assert r0 == {
        "uw": ar(9), "uw_absent": ar(9),  # 3 header + T values + T presence
        "si_free": ar(4, 3), "si_free_absent": ar(4, 6),  # header (+ the absent count), values (+ presence)
        "famo_update": ar(9),
        "backward": ar(5, 3, 3, 93), "backward_absent": ar(5, 6, 3, 93),
    }
