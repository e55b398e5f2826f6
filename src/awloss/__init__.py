"""awloss: multi-task loss weighting and gradient aggregation for PyTorch.

Quick start:
    >>> import torch
    >>> from awloss import AutomaticWeightedLoss
    >>> awl = AutomaticWeightedLoss(2)
    >>> total = awl(torch.tensor(1.0), torch.tensor(2.0))
    >>> awl.weights
    tensor([0.5000, 0.5000])
"""

from ._registry import available, get, get_class, register
from .weighting import AutomaticWeightedLoss, UncertaintyWeighting, Weighting
from .weighting import COSMOS, PBI
from .weighting import DWA, FAMO, IMTLL, RLW, STCH, UWSO, Constant, GeometricMean, GradNorm, Mean, ScaleInvariant, Sum
from . import aggregation
from ._backward import backward
from .aggregation import (
    MGDA,
    DBMTL,
    IMTLG,
    Aggregator,
    AlignedMTL,
    CAGrad,
    ConFIG,
    CRMOGM,
    DualProj,
    ExcessMTL,
    FairGrad,
    GradConstant,
    GradDrop,
    GradRandom,
    GradMean,
    GradSum,
    GradVac,
    GramianAggregator,
    Krum,
    MoCo,
    MoDo,
    NashMTL,
    PCD,
    PCGrad,
    SDMGrad,
    TrimmedMean,
    UPGrad,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "available",
    "get",
    "get_class",
    "register",
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
    "CRMOGM",
    "aggregation",
    "backward",
    "Aggregator",
    "GramianAggregator",
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "DBMTL",
    "DualProj",
    "ExcessMTL",
    "FairGrad",
    "GradConstant",
    "GradDrop",
    "GradRandom",
    "GradMean",
    "GradSum",
    "GradVac",
    "IMTLG",
    "Krum",
    "MoCo",
    "MoDo",
    "MGDA",
    "NashMTL",
    "PCD",
    "PCGrad",
    "SDMGrad",
    "TrimmedMean",
    "UPGrad",
]
