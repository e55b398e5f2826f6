"""Gradient-level aggregators: per-task gradients ``J[T, n]`` → one update ``[n]``."""

from ._aligned_mtl import AlignedMTL
from ._base import Aggregator, GramianAggregator, SolverError, SolverFallbackWarning
from ._cagrad import CAGrad
from ._config import ConFIG
from ._dbmtl import DBMTL
from ._dualproj import DualProj
from ._graddrop import GradDrop
from ._gradvac import GradVac
from ._imtl_g import IMTLG
from ._mean import GradMean, GradSum
from ._mgda import MGDA
from ._nash_mtl import NashMTL
from ._pcgrad import PCGrad
from ._upgrad import UPGrad

__all__ = [
    "DBMTL",
    "IMTLG",
    "MGDA",
    "Aggregator",
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "GradDrop",
    "GradMean",
    "GradSum",
    "GradVac",
    "GramianAggregator",
    "NashMTL",
    "PCGrad",
    "SolverError",
    "SolverFallbackWarning",
    "UPGrad",
]
