"""``benchmarks/gpu_check.py --dry-run``: the GPU check's code runs on the CPU (toy sizes), so the script
that a GPU machine runs is tested here; the full dry run of every method is marked slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, *extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    out = tmp_path / "gpu_check"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out), *extra],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.with_suffix(".txt").read_text()
    assert "dry run" in text.splitlines()[0]
    return json.loads(out.with_suffix(".json").read_text())


def test_dry_run_of_each_check(tmp_path):
    report = run(tmp_path, "--methods", "uw", "upgrad", "--only", "methods", "amp", "distributed", "timing", "gramian")
    checks = {r["check"] for r in report["rows"]}
    assert {"sync-free step", "gloo, one process", "loop vs batched (UPGrad)", "gramian engine (UPGrad)"} <= checks
    assert any(c.startswith("autocast") for c in checks)
    assert all(r["ok"] for r in report["rows"]), report["rows"]
    gramian = [r for r in report["rows"] if r["check"] == "gramian engine (UPGrad)"]
    assert sorted(r["kind"] for r in gramian) == ["conv", "transformer"]
    for r in gramian:
        T = int(r["method"].removeprefix("T="))
        for variant in ("floor", "loop", "gram_loop", "gram_batched"):
            assert r[variant]["ms"] > 0 and r[variant]["passes"] >= 1, (variant, r)
        for variant in ("floor", "loop", "gram_loop"):  # one backward per task through the trunk
            assert r[variant]["passes"] == T, (variant, r)
        assert r["gram_batched"]["passes"] == 1, r  # the forced batched passes: one vmap-ed backward
        assert r["floor"]["weights"] is None and len(r["gram_batched"]["weights"]) == T
        assert r["weights_max_diff"] <= 1e-4 and "gram_batched/floor" in r["note"]


def test_the_gramian_variants_force_the_engines_choice():
    import importlib.util

    import torch

    from awloss._backward import _engine

    spec = importlib.util.spec_from_file_location("awloss_gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)

    cpu = torch.device("cpu")
    before = _engine.auto_batches
    assert not _engine.auto_batches(cpu)
    with gpu_check._batched_passes(True):
        assert _engine.auto_batches(cpu) is True
        with gpu_check._batched_passes(False):
            assert _engine.auto_batches(torch.device("meta")) is False
        assert _engine.auto_batches(cpu) is True
    assert _engine.auto_batches is before
    try:
        with gpu_check._batched_passes(True):
            raise KeyError("x")
    except KeyError:
        pass
    assert _engine.auto_batches is before


def test_a_cuda_run_without_cuda_says_what_to_do(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "x")],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr


@pytest.mark.slow
def test_full_dry_run(tmp_path):
    report = run(tmp_path)
    assert all(r["ok"] for r in report["rows"]), [r for r in report["rows"] if not r["ok"]]
