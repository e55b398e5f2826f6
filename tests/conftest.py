import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def _load_extra_methods() -> None:
    """AWLOSS_EXTRA_METHODS=path.py[:path2.py]: import files that register methods before the suites are collected,
    so the contract and property suites (parametrised over the registry) test a user's own methods too."""
    for i, path in enumerate(filter(None, os.environ.get("AWLOSS_EXTRA_METHODS", "").split(os.pathsep))):
        file = Path(path).resolve()
        if not file.is_file():
            raise pytest.UsageError(f"AWLOSS_EXTRA_METHODS: no such file {path!r}")
        spec = importlib.util.spec_from_file_location(f"awloss_extra_methods_{i}", file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)


_load_extra_methods()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
