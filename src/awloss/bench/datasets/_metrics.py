"""Metric helpers shared by the bench datasets (all computed in torch on whole splits)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["accuracy", "mae", "auc"]


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def mae(pred: Tensor, target: Tensor) -> float:
    return float((pred.reshape(target.shape) - target).abs().mean())


def auc(scores: Tensor, labels: Tensor) -> float:
    """ROC AUC by the Mann–Whitney statistic, ties counted as ½ (average ranks)."""
    scores = scores.reshape(-1).double()
    labels = labels.reshape(-1).bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # average ranks over ties
    uniq, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    if len(uniq) < len(scores):
        first = torch.cumsum(counts, 0) - counts + 1
        avg = first.double() + (counts.double() - 1) / 2
        ranks[order] = avg[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
