"""The examples/ scripts run as a user runs them (a fresh process), and the custom-method guide holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._load import EXAMPLES

ROOT = EXAMPLES.parent


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


def _run(*args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env={**_env(), **env}, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_every_example_is_executed_by_a_test() -> None:
    tests_text = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    for script in EXAMPLES.glob("*.py"):
        ran = f'"{script.stem}"' in tests_text or f"examples/{script.name}" in tests_text
        assert ran, f"examples/{script.name} is not run by any test"


def test_custom_method_script_and_doctests() -> None:
    out = _run("examples/custom_method.py").stdout
    assert "loss_share weights:" in out and "mean_agree weights:" in out
    # in a process of its own: registering the example's methods here would add them to this suite's registry
    doc = _run("-m", "doctest", "-v", "examples/custom_method.py").stdout
    assert "2 passed and 0 failed" in doc or ("0 failed" in doc and "passed" in doc), doc[-500:]


def test_contract_suites_pick_up_a_users_methods_by_path() -> None:
    # The guide's promise: AWLOSS_EXTRA_METHODS makes the registry-parametrised suites test your own methods.
    proc = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/contract", "-k", "loss_share or mean_agree",
                timeout=600, AWLOSS_EXTRA_METHODS=str(EXAMPLES / "custom_method.py"))
    last = proc.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last, last
    assert int(last.split()[0]) >= 20, f"too few tests picked up the example's methods: {last}"


def test_extra_methods_path_must_exist() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/contract/test_registry.py", "-p", "no:cacheprovider"],
                          cwd=ROOT, env={**_env(), "AWLOSS_EXTRA_METHODS": "no/such/file.py"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "no such file 'no/such/file.py'" in proc.stdout + proc.stderr


@pytest.mark.parametrize("script", ["per_layer", "ddp_torchrun"])
def test_script_runs(script: str) -> None:
    if script == "ddp_torchrun":
        out = _run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   f"examples/{script}.py", timeout=300).stdout
        assert out.count("weights in sync on every rank") == 2, out
    else:
        assert "per-layer weights" in _run(f"examples/{script}.py").stdout
