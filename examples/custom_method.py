"""Write your own method: a new loss-level Weighting and a new gradient-level Aggregator, registered.

    python examples/custom_method.py
    AWLOSS_EXTRA_METHODS=examples/custom_method.py python -m pytest tests/contract -k "inverse_loss or mean_agree"

A Weighting implements `forward(losses: Tensor[T]) -> Tensor[]` on a validated 1-D loss vector and records
its coefficients with `self._set_weights(w)` (detached, so that d total / d L_i = w_i). A GramianAggregator
implements `weights_from_gramian(G: Tensor[T, T]) -> Tensor[T]`; the base returns `wᵀJ`. `@awloss.register`
adds the class to the registry under `name`, so `awloss.get(name)` builds it, and the contract suites (which
are parametrised over the registry) test it: set AWLOSS_EXTRA_METHODS to this file's path, as above, to run
them against your methods.
"""

from __future__ import annotations

import torch
from torch import Tensor

import awloss
from awloss.aggregation import GramianAggregator


@awloss.register
class InverseLoss(awloss.Weighting):
    """Weigh each task by the inverse of its current loss, rescaled so that the weights sum to ``T``.

    Every task then contributes the same value to the total, whatever its scale.

    .. math:: \\text{total} = \\sum_i w_i L_i, \\quad w_i = T \\frac{1 / L_i}{\\sum_j 1 / L_j}

    where:
        - :math:`L_i` is task ``i``'s loss and :math:`T` the number of tasks; the weights are detached.

    Args:
        num_tasks: the number of tasks ``T`` (optional; fixed by the first call otherwise).
        eps: added to each loss before inverting, ``>= 0``. Default 1e-12.

    Example:
        >>> w = InverseLoss(2)
        >>> w(torch.tensor(1.0), torch.tensor(3.0))
        tensor(3.)

    References:
        The loss-ratio idea of "scale-invariant" weighting; see awloss's ``si`` for the logarithmic form.

    Note:
        A teaching example: unlike ``si`` it has no guard for a task whose loss reaches exactly 0 (its
        weight then takes everything); ``eps`` bounds it.
    """

    name = "inverse_loss"

    def __init__(self, num_tasks: int | None = None, *, eps: float = 1e-12) -> None:
        super().__init__(num_tasks)
        if not eps >= 0:
            raise ValueError(f"Parameter `eps` must be >= 0, got {eps!r}.")
        self.eps = eps

    def forward(self, losses: Tensor) -> Tensor:
        inv = 1.0 / (losses.detach().float() + self.eps)
        w = (len(losses) * inv / inv.sum()).to(losses.dtype)
        self._set_weights(w)
        return (w * losses).sum()


@awloss.register
class MeanOfAgreeing(GramianAggregator):
    """Average the task gradients, leaving out every task whose gradient conflicts with the mean.

    A task conflicts when the inner product of its gradient with the plain mean gradient is negative.

    .. math:: w_i = \\frac{[g_i^\\top \\bar g \\ge 0]}{\\sum_j [g_j^\\top \\bar g \\ge 0]}, \\quad \\bar g = \\tfrac{1}{T}\\textstyle\\sum_j g_j

    where:
        - :math:`g_i` is task ``i``'s gradient; :math:`g_i^\\top \\bar g = (G\\mathbf{1})_i / T` needs only the Gramian.

    Args:
        none: the method has no hyper-parameter.

    Example:
        >>> MeanOfAgreeing()(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-3.0, -3.0]]))
        tensor([-3., -3.])

    References:
        A teaching example in the spirit of PCGrad (Yu et al., NeurIPS 2020): conflicts read off the Gramian.

    Note:
        Not a published method: it shows the ``GramianAggregator`` contract, nothing more.
    """

    name = "mean_agree"

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        agree = (gramian.sum(dim=1) >= 0).to(gramian.dtype)
        return agree / agree.sum().clamp_min(1)  # no task agrees: weight 0 everywhere, a zero update


def main() -> None:
    torch.manual_seed(0)
    trunk = torch.nn.Linear(4, 8)
    heads = torch.nn.ModuleList([torch.nn.Linear(8, 1) for _ in range(2)])
    weighting, aggregator = awloss.get("inverse-loss", num_tasks=2), awloss.get("mean_agree")
    opt = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=0.05)
    x, y = torch.randn(32, 4), torch.randn(32, 2) * torch.tensor([1.0, 100.0])
    for step in range(20):
        feats = trunk(x)
        losses = [(h(feats).squeeze(-1) - y[:, i]).pow(2).mean() for i, h in enumerate(heads)]
        opt.zero_grad()
        if step % 2:  # alternate the two levels, to show both
            awloss.backward(losses, trunk.parameters(), aggregator)
        else:
            weighting(losses).backward()
        opt.step()
    print("inverse_loss weights:", weighting.weights.tolist())
    print("mean_agree weights:", aggregator.weights.tolist())


if __name__ == "__main__":
    main()
