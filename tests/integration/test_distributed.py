"""DDP: learned weights bit-identical on every rank, and equal to one process on the concatenated batch.

Spawns 2 and 3 CPU processes with the gloo backend on the loopback interface (file:// rendezvous).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import awloss
from awloss import distributed as D

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
WORKER = HERE / "_ddp_worker.py"
LOSS_LEVEL = awloss.available("weighting")


def launch(world: int, tmp: Path) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "GLOO_SOCKET_IFNAME": "lo",
        "MASTER_ADDR": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
    }
    init = tmp / "rendezvous"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), str(world), str(init), str(tmp)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append(out)
    for p, out in zip(procs, outs):
        assert p.returncode == 0, f"worker failed:\n{out[-4000:]}"
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module", params=[2, 3], ids=["world2", "world3"])
def ddp_results(request, tmp_path_factory):
    world = request.param
    return world, launch(world, tmp_path_factory.mktemp(f"ddp{world}"))


@pytest.fixture(scope="module")
def reference():
    """The same training in one process, without torch.distributed (world=1 shard = the whole batch)."""
    worker = _load_worker()
    return {world: _reference(worker, world) for world in (2, 3)}


def _load_worker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_awloss_ddp_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _reference(worker, world):
    # one process seeing the concatenated batch of `world` shards
    old = worker.PER_RANK
    worker.PER_RANK = old * world
    try:
        return worker.run_all(rank=0, world=1, distributed=False)
    finally:
        worker.PER_RANK = old


def _get(results, key):
    r = results.get(key)
    assert r is not None, f"no result for {key}"
    assert "error" not in r, f"{key} failed: {r['error']}"
    return r


def _assert_equal_states(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}[{k}] differs across ranks: {a[k]} vs {b[k]}"


@pytest.mark.parametrize("variant", ["outside", "inside", "rankseed", "accum"])
@pytest.mark.parametrize("name", LOSS_LEVEL)
def test_ddp_weights_identical_across_ranks(ddp_results, name, variant):
    world, per_rank = ddp_results
    r0 = _get(per_rank[0], (name, variant))
    for r in per_rank[1:]:
        rk = _get(r, (name, variant))
        assert torch.equal(rk["weights"], r0["weights"]), "weights differ across ranks"
        _assert_equal_states(rk["w_state"], r0["w_state"], "weighting state")
        _assert_equal_states(rk["model"], r0["model"], "model")
    assert not any("sync" in m for m in r0["warnings"]), r0["warnings"]


@pytest.mark.parametrize("variant", ["outside", "inside", "rankseed", "accum"])
@pytest.mark.parametrize("name", LOSS_LEVEL)
def test_ddp_matches_single_process_on_concatenated_batch(ddp_results, reference, name, variant):
    world, per_rank = ddp_results
    ref = _get(reference[world], (name, "outside" if variant == "rankseed" else variant))
    got = _get(per_rank[0], (name, variant))
    torch.testing.assert_close(got["weights"], ref["weights"], rtol=1e-9, atol=1e-10)
    for k in ref["w_state"]:
        torch.testing.assert_close(got["w_state"][k], ref["w_state"][k], rtol=1e-9, atol=1e-10)
    for k in ref["model"]:
        torch.testing.assert_close(got["model"][k], ref["model"][k], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", [n for n in LOSS_LEVEL if awloss.get_class(n).learnable])
def test_ddp_without_sync_warns_and_diverges(ddp_results, name):
    """The control: with `sync=False` the ranks learn different weights, and the user is warned."""
    world, per_rank = ddp_results
    r0 = _get(per_rank[0], (name, "nosync"))
    r1 = _get(per_rank[1], (name, "nosync"))
    assert any("sync=False" in m for m in r0["warnings"]), r0["warnings"]
    assert not torch.equal(r0["weights"], r1["weights"])


@pytest.mark.skipif(not hasattr(awloss, "backward"), reason="awloss.backward (gradient level) not merged yet")
@pytest.mark.parametrize("variant", ["aggregator", "aggregator-accum"])
@pytest.mark.parametrize("name", awloss.available("aggregator"))
def test_ddp_aggregators_identical_and_match_single_process(ddp_results, reference, name, variant):
    """awloss.backward on a DDP-wrapped model (also with no_sync() micro-batches): same update on all ranks."""
    world, per_rank = ddp_results
    r0 = _get(per_rank[0], (name, variant))
    for r in per_rank[1:]:
        rk = _get(r, (name, variant))
        assert torch.equal(rk["weights"], r0["weights"])
        _assert_equal_states(rk["model"], r0["model"], "model")
        _assert_equal_states(rk["agg_state"], r0["agg_state"], "aggregator state")
    ref = _get(reference[world], (name, variant))
    torch.testing.assert_close(r0["model"], ref["model"], rtol=1e-7, atol=1e-9)


def test_single_process_helpers_are_no_ops():
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    assert not D.is_distributed() and D.world_size() == 1
    out = D.sync_losses(t)
    assert torch.equal(out, t.detach())
    out.sum().backward()
    assert torch.equal(t.grad, torch.ones(2))
    w = awloss.get("uw", num_tasks=2)
    D.broadcast_module(w)
    assert D.check_synchronized(w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w.sync = False
        w(torch.tensor(1.0), torch.tensor(2.0))  # no process group: no warning


def test_old_import_path_is_the_core_module():
    """`awloss.integrations.distributed` (the old home) is kept as a re-export of the core `awloss.distributed`."""
    import awloss.distributed
    import awloss.integrations.distributed as old
    from awloss.integrations.distributed import check_synchronized

    assert check_synchronized is awloss.distributed.check_synchronized
    assert old._should_sync is awloss.distributed._should_sync  # private helpers too
    assert set(old.__all__) == set(awloss.distributed.__all__)
