"""Load the engines' shared helpers (`_common.py`) once, under a module name of their own.

torch.compile and the worker processes need the helpers importable by name, which the test files (imported
with ``--import-mode=importlib``) are not; every test file then does ``import _awloss_engines_common as H``.
"""

import importlib.util
import sys
from pathlib import Path

if "_awloss_engines_common" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("_awloss_engines_common", Path(__file__).with_name("_common.py"))
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _mod
    _spec.loader.exec_module(_mod)
