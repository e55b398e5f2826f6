"""FSDP2 (``torch.distributed.fsdp.fully_shard``, gloo on CPU, 2 processes), issue 16 §2.

Loss-level methods: weights, state and model identical on both ranks and equal to one process on the
concatenated batch. ``awloss.backward``: Gramian aggregators exact from the shards (before: a silent no-op,
the sharded trunk's ``.grad`` stayed ``None``); the others raise ``NotImplementedError`` on every rank.
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

pytest.importorskip("torch.distributed.fsdp")
if not hasattr(__import__("torch.distributed.fsdp", fromlist=["x"]), "fully_shard"):
    pytest.skip("torch without FSDP2 (fully_shard)", allow_module_level=True)

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
WORKER = HERE / "_fsdp_worker.py"
NOT_FROM_SHARDS = {"gradnorm"}  # measures per-task gradients of a (sharded) layer: NotImplementedError
GRAMIAN = {n for n in awloss.available("aggregator") if isinstance(awloss.get(n), awloss.GramianAggregator)}
GRAMIAN -= {n for n in GRAMIAN if getattr(awloss.get_class(n), "state_per_column", False)}


def _load_worker():
    spec = importlib.util.spec_from_file_location("_awloss_fsdp_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), "2", str(tmp / "rendezvous"), str(tmp)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, out in zip(procs, outs):
        assert p.returncode == 0, f"worker failed:\n{out[-4000:]}"
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def reference():
    worker = _load_worker()
    worker.PER_RANK *= 2  # one process seeing both ranks' shards
    return worker.run_all(rank=0, world=1, distributed=False)


def _ok(res, name):
    assert "error" not in res[name], f"{name}: {res[name]['error']}"
    return res[name]


def _assert_states(a, b, *, exact, what):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), f"{what}[{k}] differs across ranks"
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-7, atol=1e-9, msg=f"{what}[{k}]")


@pytest.mark.parametrize("name", [n for n in awloss.available("weighting") if n not in NOT_FROM_SHARDS])
def test_fsdp2_loss_level_identical_and_equal_to_one_process(ranks, reference, name):
    r0, r1, ref = _ok(ranks[0], name), _ok(ranks[1], name), _ok(reference, name)
    assert torch.equal(r0["weights"], r1["weights"])
    _assert_states(r0["w_state"], r1["w_state"], exact=True, what="weighting state")
    _assert_states(r0["model"], r1["model"], exact=True, what="model")
    torch.testing.assert_close(r0["weights"], ref["weights"], rtol=1e-9, atol=1e-10)
    _assert_states(r0["w_state"], ref["w_state"], exact=False, what="weighting state vs 1 process")
    _assert_states(r0["model"], ref["model"], exact=False, what="model vs 1 process")


@pytest.mark.parametrize("name", sorted(NOT_FROM_SHARDS))
def test_fsdp2_gradnorm_on_a_sharded_layer_raises(ranks, name):
    for r in ranks:
        assert r[name].get("error", "").startswith("NotImplementedError") and "FSDP2" in r[name]["error"]


@pytest.mark.parametrize("name", sorted(GRAMIAN))
def test_fsdp2_backward_gramian_aggregators_exact_from_the_shards(ranks, reference, name):
    """Before: the sharded trunk's .grad stayed None (trunk never trained); now equal to one process."""
    r0, r1, ref = _ok(ranks[0], name), _ok(ranks[1], name), _ok(reference, name)
    assert torch.equal(r0["weights"], r1["weights"])
    _assert_states(r0["model"], r1["model"], exact=True, what="model")
    _assert_states(r0["agg_state"], r1["agg_state"], exact=True, what="aggregator state")
    torch.testing.assert_close(r0["weights"], ref["weights"], rtol=1e-7, atol=1e-9)
    _assert_states(r0["model"], ref["model"], exact=False, what="model vs 1 process")
    init = _load_worker()._model(False).state_dict()
    assert not torch.equal(r0["model"]["trunk.0.weight"], init["trunk.0.weight"].double()), "trunk did not train"


def test_fsdp2_backward_task_absent_on_some_ranks_equals_one_process_on_the_present_data(ranks):
    """A task None on rank 1 only: its row of the Jacobian (and its share of the heads' gradients) is the mean
    over the ranks where it is present, not halved by a zero row; a task None on every rank stays absent."""
    r0, r1 = _ok(ranks[0], "upgrad@absent"), _ok(ranks[1], "upgrad@absent")
    ref = _load_worker().run_absent(rank=0, world=2, distributed=False)
    assert torch.equal(r0["weights"], r1["weights"])
    _assert_states(r0["model"], r1["model"], exact=True, what="model")
    torch.testing.assert_close(r0["weights"], ref["weights"], rtol=1e-7, atol=1e-9)
    _assert_states(r0["model"], ref["model"], exact=False, what="model vs 1 process")


@pytest.mark.parametrize("name", sorted(set(awloss.available("aggregator")) - GRAMIAN))
def test_fsdp2_backward_other_aggregators_raise(ranks, name):
    for r in ranks:
        err = r[name].get("error", "")
        assert err.startswith("NotImplementedError") and "FSDP2" in err, err


def test_fsdp1_flat_parameters_are_a_clear_error():
    """FSDP1 (FullyShardedDataParallel, use_orig_params=True) marks the original parameters `_fsdp_flattened`;
    before, awloss.backward died with "setStorage: ... out of bounds" (or said "shared_params is empty")."""
    trunk, head = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    for p in trunk.parameters():
        p._fsdp_flattened = True
    h = trunk(torch.randn(4, 3))
    losses = [head(h).pow(2).mean(), h.abs().mean()]
    with pytest.raises(NotImplementedError, match="FSDP1.*fully_shard"):
        awloss.backward(losses, trunk.parameters(), awloss.get("upgrad"))
