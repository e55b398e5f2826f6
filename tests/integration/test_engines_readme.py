"""Every example of README's "## Engines" section runs (the DDP one on 2 real gloo processes)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ._readme import README, run_section, sections

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SECTIONS = ["DDP", "Mixed precision", "torch.compile", "Lightning", "Logging weights", "Checkpoints"]


def _engine_headings() -> list[str]:
    text = README.read_text(encoding="utf-8")
    body = text.split("\n## Engines\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^### (.*)$", body, flags=re.M)


def test_every_engine_has_a_section_with_an_example():
    headings = _engine_headings()
    blocks = sections()
    for prefix in ENGINE_SECTIONS:
        (heading,) = [h for h in headings if h.startswith(prefix)]
        assert blocks.get(heading), f"README section {heading!r} has no python example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_example_on_two_processes(tmp_path):
    (code,) = next(b for h, b in sections().items() if h.startswith("DDP"))
    script = tmp_path / "train.py"
    script.write_text(code)
    base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
            "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script)], env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outs)[-3000:]
    lines = [o.strip().splitlines()[-1] for o in outs]
    assert lines[0].split(" ", 1)[1] == lines[1].split(" ", 1)[1]  # the same weights printed by both ranks


def test_amp_example():
    ns = run_section("Mixed precision")
    assert ns["uw"].log_var.dtype == torch.float32
    assert ns["agg_scaler"].get_scale() > 0 and torch.isfinite(ns["agg_model"].weight).all()


def test_compile_example(monkeypatch):
    real = torch.compile

    def cheap(model=None, **kw):  # the README shows the default backend; the slow test covers inductor
        kw.setdefault("backend", "aot_eager")
        return real(model, **kw) if model is not None else real(**kw)

    monkeypatch.setattr(torch, "compile", cheap)
    torch._dynamo.reset()
    ns = run_section("torch.compile")
    assert torch.isfinite(ns["total"]) and ns["awl"].task_names == ("a", "b")
    assert ns["trunk"].weight.grad is not None and ns["heads"][1].weight.grad is not None


def test_lightning_example():
    pytest.importorskip("lightning")
    ns = run_section("Lightning")
    groups = ns["trainer"].optimizers[0].param_groups
    assert groups[-1]["lr"] == 0.025 and groups[-1]["weight_decay"] == 0.0
    assert "weight/depth" in ns["trainer"].callback_metrics


def test_logging_example():
    ns = run_section("Logging weights")
    rows = open(ns["path"]).read().strip().splitlines()
    assert rows[0] == "step,weight/seg,weight/depth,sigma/seg,sigma/depth,loss" and len(rows) == 4


def test_checkpoint_example():
    ns = run_section("Checkpoints")
    assert set(ns["state"]) == {"model", "weighting", "optimizer"}
