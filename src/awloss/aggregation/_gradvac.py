"""GradVac: pull each pair of task gradients toward an EMA of their cosine similarity."""

from __future__ import annotations

import torch
from torch import Tensor

from .._inputs import check_positive
from .._registry import register
from ._base import GramianAggregator
from ._solvers import visit_orders

__all__ = ["GradVac"]


@register
class GradVac(GramianAggregator):
    r"""Gradient vaccine: adaptive, similarity-targeted gradient surgery (stateful).

    Like PCGrad, each task visits the others in random order, but instead of removing only negative
    alignment it raises the cosine similarity :math:`\phi_{ij}` of its modified gradient with
    :math:`g_j` up to a target :math:`\hat\phi_{ij}`, an exponential moving average of past
    similarities kept in a ``T x T`` buffer. All quantities come from the Gramian.

    .. math::
        \text{if } \phi_{ij} < \hat\phi_{ij}:\quad g_i^{PC} \mathrel{+}= \frac{\|g_i^{PC}\|
        (\hat\phi_{ij}\sqrt{1-\phi_{ij}^2} - \phi_{ij}\sqrt{1-\hat\phi_{ij}^2})}{\|g_j\|\sqrt{1-\hat\phi_{ij}^2}}\, g_j,
        \qquad \hat\phi_{ij} \leftarrow (1-\beta)\hat\phi_{ij} + \beta\phi_{ij}

    where:
        - :math:`\phi_{ij} = \cos(g_i^{PC}, g_j)` at the visit; :math:`\hat\phi` starts at 0;
        - the update is :math:`d = \sum_i g_i^{PC}`.

    Args:
        beta: EMA rate in ``[0, 1]``; default ``0.5`` (LibMTL's and TorchJD's default; the paper tunes it).
        eps: small constant added to the denominators, relative to the RMS gradient norm, ``>= 0``;
            default ``1e-8``.

    Example:
        >>> import torch, awloss
        >>> agg = awloss.get("gradvac")
        >>> agg(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
        tensor([0.5000, 1.5000])
        >>> agg.phi_hat
        tensor([[ 0.0000, -0.3536],
                [-0.3536,  0.0000]], dtype=torch.float64)

    References:
        Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving Multi-task
        Optimization in Massively Multilingual Models", ICLR 2021.

    Note:
        The target state lives in the ``phi_hat`` buffer, in float64 like the Gramian it comes from
        (``state_dict`` round-trips; TorchJD keeps it in a plain attribute). All tasks are processed together, ``T`` vectorised steps on the device,
        instead of the ``T²`` Python-loop visits of LibMTL and TorchJD. Their ``eps`` is absolute; ours is
        scaled by the RMS gradient norm so that the method is exactly scale invariant.
    """

    name = "gradvac"
    permutation_equivariant = False
    stateful = True
    phi_hat: Tensor  # buffer (registered in __init__)

    def __init__(self, beta: float = 0.5, eps: float = 1e-8) -> None:
        super().__init__()
        self.beta = check_positive("beta", beta, strict=False)
        if self.beta > 1:
            raise ValueError(f"Parameter `beta` must be in [0, 1], got {beta!r}.")
        self.eps = check_positive("eps", eps, strict=False)
        self.register_buffer("phi_hat", torch.zeros(0, 0))

    def reset_parameters(self) -> None:
        self.phi_hat = torch.zeros(0, 0, device=self.phi_hat.device)

    masked_rows = True

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        G = gramian
        T, dev = G.shape[0], G.device
        rows = self._rows  # zero rows are left out by the base: index the targets of the tasks solved
        full = T if rows is None else self._rows_of
        if self.phi_hat.shape != (full, full):
            self.phi_hat = torch.zeros(full, full, dtype=G.dtype, device=dev)
        phi_hat = self.phi_hat.to(G.dtype)
        if rows is not None:
            phi_hat = phi_hat[rows][:, rows]
        present = self._present()
        order = visit_orders(T, present, dev)
        rows = torch.arange(T, device=dev)
        C = torch.eye(T, dtype=G.dtype, device=dev)
        norm_g = G.diagonal().clamp_min(0).sqrt()
        unit = norm_g.pow(2).mean().sqrt()  # eps is relative to the gradients' scale (scale invariance)
        if present is not None:  # the mean over the non-zero rows
            unit = (norm_g.pow(2).sum() / present.sum().clamp_min(1).to(G.dtype)).sqrt()
        for k in range(T):
            j = order[:, k]
            valid = j != rows
            if present is not None:  # a pair with a zero row: no projection, its target keeps its value
                valid = valid & present & present[j]
            cG = C @ G
            dot = cG.gather(1, j[:, None]).squeeze(1)
            norm_i = (cG * C).sum(dim=1).clamp_min(0).sqrt()
            norm_j = norm_g[j]
            phi = dot / (norm_i * norm_j + self.eps * unit * unit)
            target = phi_hat[rows, j]
            s_phi = (1 - phi * phi).clamp_min(0).sqrt()
            s_hat = (1 - target * target).clamp_min(0).sqrt()
            w = norm_i * (target * s_phi - phi * s_hat) / (norm_j * s_hat + self.eps * unit)
            w = torch.where(valid & (phi < target), w, torch.zeros_like(w))
            C = C.index_put((rows, j), w, accumulate=True)
            new = torch.where(valid, (1 - self.beta) * target + self.beta * phi, target)
            phi_hat = phi_hat.index_put((rows, j), new)
        if rows is None:
            self.phi_hat = phi_hat.detach()
        else:  # an absent task's targets keep their values
            full_hat = self.phi_hat.to(G.dtype).clone()
            full_hat[rows[:, None], rows[None, :]] = phi_hat.detach()
            self.phi_hat = full_hat
        return C.sum(dim=0)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, eps={self.eps}"
