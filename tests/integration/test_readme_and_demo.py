"""README examples run, CI runs the README's test command, and the main demo recovers the noise levels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from awloss import demo

from ._readme import bash_blocks, run_section

ROOT = Path(__file__).resolve().parents[2]


def test_quick_start_runs():
    ns = run_section("Quick start")
    assert ns["awl"].weights.shape == (2,)
    assert ns["total"].dim() == 0


def test_seed_readme_complete_example_runs_as_written():
    ns = run_section("Coming from the seed")
    awl = ns["awl"]
    assert len(ns["optimizer"].param_groups) == 2
    assert not torch.equal(awl.sigma, torch.ones(2)), "σ should have moved during the seed's loop"
    assert torch.isfinite(ns["loss_sum"])


def test_ci_runs_exactly_the_readme_test_command():
    commands = [b.strip() for b in bash_blocks() if "pytest" in b]
    assert len(commands) == 1, "README must show exactly one test command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[0] in ci.splitlines()
    assert "torch==2.13.0" in commands[0]


def test_demo_recovers_sigmas_within_20_percent():
    results = demo.run(steps=800, seed=0)
    assert len(results) == 2
    for label, r in results.items():
        for learned, target in zip(r["learned"], r["target"]):
            assert abs(learned - target) / target < 0.2, f"{label}: σ {learned:.2f} vs target {target:.2f}"
    kendall = next(r for k, r in results.items() if "Kendall" in k)
    assert kendall["target"] == pytest.approx([1.0, 10.0])  # Kendall recovers the true noise itself
