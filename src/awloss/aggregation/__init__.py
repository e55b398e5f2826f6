"""Gradient-level aggregators: per-task gradients ``J[T, n]`` → one update ``[n]``."""

from ._aligned_mtl import AlignedMTL
from ._base import Aggregator, GramianAggregator, SolverError
from ._cagrad import CAGrad
from ._config import ConFIG
from ._cr_mogm import CRMOGM
from ._dbmtl import DBMTL
from ._dualproj import DualProj
from ._fairgrad import FairGrad
from ._grad_constant import GradConstant
from ._grad_random import GradRandom
from ._graddrop import GradDrop
from ._gradvac import GradVac
from ._imtl_g import IMTLG
from ._krum import Krum
from ._mean import GradMean, GradSum
from ._mgda import MGDA
from ._nash_mtl import NashMTL
from ._pcd import PCD
from ._pcgrad import PCGrad
from ._trimmed_mean import TrimmedMean
from ._upgrad import UPGrad

__all__ = [
    "CRMOGM",
    "DBMTL",
    "IMTLG",
    "Krum",
    "MGDA",
    "Aggregator",
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "FairGrad",
    "GradConstant",
    "GradDrop",
    "GradRandom",
    "GradMean",
    "GradSum",
    "GradVac",
    "GramianAggregator",
    "NashMTL",
    "PCD",
    "PCGrad",
    "SolverError",
    "TrimmedMean",
    "UPGrad",
]
