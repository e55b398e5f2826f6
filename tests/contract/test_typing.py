"""The typed public API: `awloss.get` tells a type checker which level a name builds (mypy, as users' CI runs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import awloss
from awloss import _registry

ROOT = Path(__file__).resolve().parents[2]


def _spellings(kind: str) -> set[str]:
    own = {n for n, c in _registry._CLASSES.items() if c.__module__.startswith("awloss.")}  # not doctest/user methods
    return {s for s, n in _registry._LOOKUP.items() if n in own and awloss.get_class(n).kind == kind}


@pytest.mark.parametrize("kind, literal", [("weighting", _registry.WeightingName), ("aggregator", _registry.AggregatorName)])
def test_literal_names_match_the_registry(kind: str, literal: object) -> None:
    declared = set(typing.get_args(literal))
    registered = _spellings(kind)
    assert declared == registered, (
        f"update {kind.title()}Name in src/awloss/_registry.py: missing {sorted(registered - declared)}, "
        f"stale {sorted(declared - registered)}"
    )


@pytest.mark.slow  # mypy analyses torch: ~40 s on a quiet machine
@pytest.mark.skipif(shutil.which("mypy") is None and not __import__("importlib").util.find_spec("mypy"),
                    reason="mypy is not installed (pip install -e '.[test]' installs it)")
def test_mypy_sees_what_get_returns(tmp_path: Path) -> None:
    snippet = tmp_path / "use.py"
    snippet.write_text(
        "import awloss\n"
        "w = awloss.get('uw', num_tasks=2)\n"
        "a = awloss.get('upgrad')\n"
        "u = awloss.get('Nash-MTL')\n"
        "reveal_type(w)\nreveal_type(a)\nreveal_type(u)\n"
        "reveal_type(w.weights)\n"
    )
    env = dict(os.environ, MYPYPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
                           str(snippet)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    revealed = [line.split("Revealed type is ")[1].strip('"') for line in out.splitlines() if "Revealed type" in line]
    assert revealed[0] == "awloss.weighting._base.Weighting"
    assert revealed[1] == "awloss.aggregation._base.Aggregator"
    assert revealed[2] in ("awloss.weighting._base.Weighting | awloss.aggregation._base.Aggregator",
                           "Union[awloss.weighting._base.Weighting, awloss.aggregation._base.Aggregator]")
    assert revealed[3] in ("torch._tensor.Tensor", "torch.Tensor")


def test_package_is_clean_under_mypy_strict() -> None:
    """`mypy --strict src/awloss` reports nothing (issue 17 §2): the package ships `py.typed`, so its users'
    type checkers read these annotations. Configured in pyproject.toml's [tool.mypy]; mypy is in the test
    extra. A cold run analyses torch and numpy (about 20 s of CPU; more wall time on a loaded machine); the
    `.mypy_cache` it leaves makes a rerun a few seconds."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "src/awloss"], capture_output=True, text=True,
                          cwd=ROOT, timeout=1800)  # fmt: skip
    assert proc.returncode == 0, f"mypy --strict src/awloss failed:\n{proc.stdout}{proc.stderr}"
