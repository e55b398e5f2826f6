"""awloss.backward under torch.distributed: every rank gets the update of the concatenated batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
WORKER = HERE / "_ddp_backward_worker.py"


def launch(world: int, tmp: Path, *extra: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)]), "GLOO_SOCKET_IFNAME": "lo",
           "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(world), str(tmp / "rdv"), str(tmp), *extra],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, f"worker failed:\n{out[-4000:]}"
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(world)]


def test_ranks_agree_and_match_one_process_on_the_whole_batch(tmp_path):
    sys.path.insert(0, str(HERE))
    import _ddp_backward_worker as W

    launched = launch(2, tmp_path)
    ref = W.reference(2)
    for mode in ("plain", "ddp"):
        check(mode, [r[mode] for r in launched], ref)


def check(mode, results, ref):
    for r in results:
        assert torch.equal(r["weights"], results[0]["weights"])
        for k in ref["params"]:
            assert torch.equal(r["params"][k], results[0]["params"][k]), f"{mode}: {k} differs across ranks"
            torch.testing.assert_close(r["params"][k], ref["params"][k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[0]["weights"], ref["weights"], rtol=1e-9, atol=1e-12)
