"""Loss-level weightings: per-task losses → one scalar to ``.backward()``."""

from ._awl import AutomaticWeightedLoss
from ._base import Weighting
from ._constant import Constant
from ._cosmos import COSMOS
from ._dwa import DWA
from ._famo import FAMO
from ._geometric_mean import GeometricMean
from ._gradnorm import GradNorm
from ._imtl_l import IMTLL
from ._mean import Mean
from ._pbi import PBI
from ._rlw import RLW
from ._scale_invariant import ScaleInvariant
from ._stch import STCH
from ._sum import Sum
from ._uncertainty import UncertaintyWeighting
from ._uwso import UWSO

__all__ = [
    "Weighting",
    "UncertaintyWeighting",
    "AutomaticWeightedLoss",
    "Sum",
    "Mean",
    "Constant",
    "ScaleInvariant",
    "GeometricMean",
    "DWA",
    "RLW",
    "IMTLL",
    "UWSO",
    "FAMO",
    "GradNorm",
    "STCH",
    "COSMOS",
    "PBI",
]
