"""The README's lifecycle example (DWA, FAMO, GradNorm, STCH in one loop) runs as written."""

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("_readme", Path(__file__).parents[1] / "integration" / "_readme.py")
_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_readme)


def test_lifecycle_example_runs():
    ns = _readme.run_section("Loss-level weightings: the lifecycle hooks")
    w = ns["w"]  # the last one, STCH after its warm-up epoch
    assert int(w.epochs) == 3 and torch.isfinite(w.weights).all()
    assert not torch.equal(w.nadir, torch.ones(3))
