"""What only a GPU shows (skipped without CUDA): sync-free steps for every method, fp16 autocast +
GradScaler, CUDA graphs via torch.compile, NCCL with one process. Their code is benchmarks/gpu_check.py's;
``--dry-run`` of that script runs on the CPU in tests/gpu/test_gpu_check_dry_run.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import awloss

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ROOT = Path(__file__).resolve().parents[2]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("awloss_gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


METHODS = awloss.available("weighting") + awloss.available("aggregator")


@pytest.mark.parametrize("name", METHODS)
def test_a_whole_step_is_sync_free_and_still_checks(name):
    (row,) = _gpu_check().check_methods("cuda", 3, [name])
    assert row["ok"], row["note"]


@pytest.mark.parametrize("name", METHODS)
def test_fp16_autocast_with_a_grad_scaler(name):
    (row,) = _gpu_check().check_amp("cuda", 3, [name])
    assert row["ok"], row["note"]


def test_compile_reduce_overhead_of_a_loss_level_step():
    rows = _gpu_check().check_compile("cuda", 10)
    assert all(r["ok"] for r in rows), rows


def test_nccl_with_one_process():
    (row,) = _gpu_check().check_distributed("cuda")
    assert row["ok"], row["note"]
