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
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.with_suffix(".txt").read_text()
    assert "dry run" in text.splitlines()[0]
    return json.loads(out.with_suffix(".json").read_text())


def test_dry_run_of_each_check(tmp_path):
    report = run(tmp_path, "--methods", "uw", "upgrad", "--only", "methods", "amp", "distributed", "timing")
    checks = {r["check"] for r in report["rows"]}
    assert {"sync-free step", "gloo, one process", "loop vs batched (UPGrad)"} <= checks
    assert any(c.startswith("autocast") for c in checks)
    assert all(r["ok"] for r in report["rows"]), report["rows"]


def test_a_cuda_run_without_cuda_says_what_to_do(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "x")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr


@pytest.mark.slow
def test_full_dry_run(tmp_path):
    report = run(tmp_path)
    assert all(r["ok"] for r in report["rows"]), [r for r in report["rows"] if not r["ok"]]
