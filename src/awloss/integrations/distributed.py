"""Moved: the distributed support is core, see :mod:`awloss.distributed`.

This thin re-export keeps ``awloss.integrations.distributed`` importable for existing code: every name
(public or private) resolves to the object of the same name in :mod:`awloss.distributed`. Patch that
module, not this one, to change awloss's behaviour.
"""

from typing import Any

from .. import distributed as _distributed
from ..distributed import *  # noqa: F403
from ..distributed import __all__  # noqa: F401


def __getattr__(name: str) -> Any:
    return getattr(_distributed, name)
