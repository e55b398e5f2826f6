"""Write your own method: a new loss-level Weighting and a new gradient-level Aggregator, registered.

    python examples/custom_method.py
    AWLOSS_EXTRA_METHODS=examples/custom_method.py python -m pytest tests/contract -k "loss_share or mean_agree"

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
class LossShare(awloss.Weighting):
    """Weigh each task by its share of the current total loss, so that the hardest task leads.

    The weights are detached and sum to ``T``; a task whose loss is 0 gets weight 0 and leaves the others
    as they were.

    .. math:: \\text{total} = \\sum_i w_i L_i, \\quad w_i = T \\frac{L_i}{\\max(\\sum_j L_j, \\epsilon)}

    where:
        - :math:`L_i` is task ``i``'s loss and :math:`T` the number of tasks present; the weights are detached;
        - :math:`\\epsilon` is the smallest positive float32, so all-zero losses give all-zero weights.

    Args:
        num_tasks: the number of tasks ``T`` (optional; fixed by the first call otherwise).

    Example:
        >>> w = LossShare(2)
        >>> w(torch.tensor(1.0), torch.tensor(3.0))
        tensor(5.)

    References:
        A teaching example: the "focus on the worst task" idea of min-max scalarisations (see awloss's
        ``stch`` for a published, smooth version).

    Note:
        Not a published method: it shows the ``Weighting`` contract, nothing more.
    """

    name = "loss_share"
    absent_by_subset = True  # no per-task state: a task given as None is simply left out

    def forward(self, losses: Tensor) -> Tensor:
        values = losses.detach().to(torch.promote_types(losses.dtype, torch.float32))  # fp16-safe
        w = (len(losses) * values / values.sum().clamp_min(torch.finfo(torch.float32).tiny)).to(losses.dtype)
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
    weighting, aggregator = awloss.get("loss-share", num_tasks=2), awloss.get("mean_agree")
    opt = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=0.01)
    x, y = torch.randn(32, 4), torch.randn(32, 2) * torch.tensor([1.0, 3.0])
    for step in range(20):
        feats = trunk(x)
        losses = [(h(feats).squeeze(-1) - y[:, i]).pow(2).mean() for i, h in enumerate(heads)]
        opt.zero_grad()
        if step % 2:  # alternate the two levels, to show both
            awloss.backward(losses, trunk.parameters(), aggregator)
        else:
            weighting(losses).backward()
        opt.step()
    print("loss_share weights:", weighting.weights.tolist())
    print("mean_agree weights:", aggregator.weights.tolist())


if __name__ == "__main__":
    main()
