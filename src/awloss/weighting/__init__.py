"""Loss-level weightings: per-task losses → one scalar to ``.backward()``."""

from ._awl import AutomaticWeightedLoss
from ._base import Weighting
from ._uncertainty import UncertaintyWeighting

__all__ = ["Weighting", "UncertaintyWeighting", "AutomaticWeightedLoss"]
