"""Gradient-level aggregators: per-task gradients ``J[T, n]`` → one update ``[n]``."""

from ._aligned_mtl import AlignedMTL
from ._base import Aggregator, GramianAggregator, SolverError, SolverFallbackWarning
from ._cagrad import CAGrad
from ._config import ConFIG
from ._cr_mogm import CRMOGM
from ._dbmtl import DBMTL
from ._dualproj import DualProj
from ._excess_mtl import ExcessMTL
from ._fairgrad import FairGrad
from ._grad_constant import GradConstant
from ._grad_random import GradRandom
from ._graddrop import GradDrop
from ._gradvac import GradVac
from ._imtl_g import IMTLG
from ._krum import Krum
from ._mean import GradMean, GradSum
from ._mgda import MGDA
from ._moco import MoCo
from ._modo import MoDo
from ._nash_mtl import NashMTL
from ._pcd import PCD
from ._sdmgrad import SDMGrad
from ._pcgrad import PCGrad
from ._trimmed_mean import TrimmedMean
from ._upgrad import UPGrad

__all__ = [
    "CRMOGM",
    "DBMTL",
    "IMTLG",
    "MoCo",
    "MoDo",
    "Krum",
    "MGDA",
    "Aggregator",
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "ExcessMTL",
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
    "SDMGrad",
    "SolverError",
    "SolverFallbackWarning",
    "TrimmedMean",
    "UPGrad",
]
