"""``AutomaticWeightedLoss``: the seed's module, same call, same objective, with the guards it lacked."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._registry import register
from . import _awl_seed as _seed
from ._awl_kernel import SeedObjective
from ._uncertainty import _FACTORS, UncertaintyWeighting

__all__ = ["AutomaticWeightedLoss"]


@register
class AutomaticWeightedLoss(UncertaintyWeighting):
    r"""The seed's automatically weighted multi-task loss (Liebel & Körner's uncertainty weighting).

    A drop-in replacement for ``Mikoto10032/AutomaticWeightedLoss``: ``awl = AutomaticWeightedLoss(2)``
    then ``awl(loss1, loss2)``, with σ = 1 at init and the same objective. By default σ is learned through
    its log-variance (stable, no sign symmetry, no pole at 0); ``parameterization="sigma"`` learns σ
    itself and reproduces the seed's updates exactly, for users who need their old runs back.

    .. math::

        \mathcal{L} = \sum_i \frac{1}{2\sigma_i^2} L_i + \ln(1 + \sigma_i^2)

    where:

    - :math:`L_i` is task *i*'s loss (must be :math:`\ge 0`);
    - :math:`\sigma_i` is task *i*'s learned uncertainty, :attr:`sigma`, 1 at init;
    - :math:`w_i = 1/(2\sigma_i^2)` is reported in :attr:`weights`; at the optimum
      :math:`\sigma_i^{*2} = (L_i + \sqrt{L_i^2 + 8L_i})/4`.

    Args:
        num: number of losses, ``>= 1`` (the seed's name; ``num_tasks=`` is accepted too). Default 2.
            Like the seed, a call with fewer losses ``k < num`` uses σ_1..σ_k (warned once); more is an error.
        parameterization: ``"log_variance"`` (default; learns :math:`s = \log\sigma^2`) or ``"sigma"``
            (learns σ as the seed does, in a parameter named ``params`` so seed checkpoints load).
        mask_zero_losses: freeze σ of a task whose loss is exactly 0 (or ``None``, absent). Default: on
            for ``"log_variance"``, off for ``"sigma"`` (the seed's updates, bit for bit).
        **kwargs: ``task_types``, ``init`` (log-variance, default 0), ``clamp``, ``task_names``, as for
            :class:`UncertaintyWeighting` (``clamp`` needs ``"log_variance"``).

    Example:
        >>> import torch
        >>> from awloss import AutomaticWeightedLoss
        >>> awl = AutomaticWeightedLoss(2)
        >>> awl(1, 2)  # the seed's own example: 0.5 + ln 2 + 1 + ln 2
        tensor(2.8863, grad_fn=<_UWObjectiveBackward>)
        >>> awl.weights, awl.sigma
        (tensor([0.5000, 0.5000]), tensor([1., 1.]))

    References:
        L. Liebel, M. Körner. Auxiliary Tasks in Multi-task Learning. arXiv 2018,
        https://arxiv.org/abs/1805.06334.
        Mikoto10032/AutomaticWeightedLoss (2020), ``AutomaticWeightedLoss.py``.

    Note:
        The seed learns σ directly; a task whose loss is 0 then drives σ to 0 and the weight to infinity
        (its issue #2). By default we learn :math:`\log\sigma^2` and freeze σ of a task whose loss is
        exactly 0: same objective, different path (at the seed's learning rate σ moves about 2× slower
        under Adam and 4× under SGD near σ = 1, and weight decay pulls σ toward 1 instead of 0).
        :attr:`params` returns σ (read-only) in this parameterization, for logging code. A seed checkpoint
        (key ``params``) is converted to :math:`\log\sigma^2` with a warning (an optimizer state saved
        with it no longer fits); σ = 0 in a checkpoint is refused. If the losses are on another device than
        the module, the objective is computed on the losses' device and the parameters stay where they are,
        as in the seed (warned once: moving the module is faster); other methods raise instead.
        ``parameterization="sigma"`` runs the seed's objective as one autograd node that rounds exactly as
        the seed's per-task loop does, forward and backward (its sum too: left to right, not
        ``torch.sum``'s pairs), so it cannot fuse the seed's ops: a call with its backward costs 22 ops
        more than ``torch.stack(losses).sum()`` at T = 10 on the CPU and 30 elsewhere (the sum is then
        T - 1 adds), against 12 in the default parameterization; with ``mask_zero_losses=True`` or σ on
        another device than the losses it runs the seed's loop (about 30 ops per task).
    """

    name = "awl"
    aliases = ("automatic_weighted_loss", "liebel", "uw_log1p")

    def __init__(
        self,
        num: int = 2,
        *,
        num_tasks: int | None = None,
        parameterization: Literal["log_variance", "sigma"] = "log_variance",
        mask_zero_losses: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if num_tasks is not None:
            num = num_tasks
        if parameterization not in ("log_variance", "sigma"):
            raise ValueError(
                f"Parameter `parameterization` must be 'log_variance' or 'sigma', got {parameterization!r}."
            )
        if parameterization == "sigma" and kwargs.get("clamp") is not None:
            raise ValueError("Parameter `clamp` needs parameterization='log_variance'.")
        if mask_zero_losses is None:  # sigma mode is the seed, bit for bit, zero losses included
            mask_zero_losses = parameterization == "log_variance"
        kwargs.setdefault("regularizer", "log1p")
        super().__init__(num, mask_zero_losses=mask_zero_losses, **kwargs)
        self.parameterization = parameterization
        self._warned: set[str] = set()
        if parameterization == "sigma":
            del self.log_var
            self.params = nn.Parameter(torch.exp(0.5 * self.init))

    @property
    def params(self) -> Tensor:
        """σ per task. The learned parameter in sigma mode; a detached, read-only σ otherwise (for logging)."""
        p: Tensor | None = self.__dict__["_parameters"].get("params")
        if p is not None:
            return p
        if self.parameterization == "sigma":
            raise AttributeError("params")  # not registered yet (construction)
        return self.sigma

    @params.setter
    def params(self, value: Any) -> None:
        raise AttributeError(
            "`AutomaticWeightedLoss.params` is read-only in the log-variance parameterization (it returns σ); "
            "set `log_var` (log σ²), load a state_dict, or use parameterization='sigma'."
        )

    def reset_parameters(self) -> None:
        if self.parameterization == "log_variance":
            return super().reset_parameters()
        with torch.no_grad():
            self.params.copy_(torch.exp(0.5 * self.init))

    def _log_var(self) -> Tensor:
        if self.parameterization == "log_variance":
            return super()._log_var()
        return torch.log(self.params**2)

    @property
    def sigma(self) -> Tensor:
        if self.parameterization == "sigma":
            return self.params.detach().abs()
        return super().sigma

    # ------------------------------------------------------------- the seed's call forms
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=_seed.user_stacklevel())

    @property
    def _fused_check(self) -> bool:  # type: ignore[override]
        # Only UW's fused objective (log-variance mode) is NaN/inf for a bad loss; the seed's objective is not.
        return self.parameterization == "log_variance"

    def _loss_vector(self, losses: tuple[Any, ...], *, sync: bool = True, **options: Any) -> Tensor:
        num = self.num_tasks
        assert num is not None
        k = num if len(losses) == num > 1 else _seed.count(losses)  # varargs of the full count: the usual call
        given = None
        if k is not None and 0 < k < num:  # the seed uses the first k σ's
            self._warn_once(
                "fewer",
                f"AutomaticWeightedLoss({num}) got {k} losses: like the seed it weighs them with σ_1..σ_{k}, and "
                f"σ_{k + 1}..σ_{num} get no gradient. Construct it with `AutomaticWeightedLoss({k})` if that is "
                "not intended.",
            )
            losses, given = _seed.pad(losses, num), k
        try:
            vec = super()._loss_vector(losses, sync=sync, **options)
        except (TypeError, ValueError) as error:
            raise _seed.explain(error, losses, num) from None
        self.__dict__["_given"] = given
        return vec

    def _check_values(self, vec: Tensor) -> None:
        try:
            super()._check_values(vec)
        except ValueError as error:
            if bool((vec.detach() < 0).any()):
                raise ValueError(f"{error} {_seed.negative_hint()}") from None
            raise

    def _check_device(self, vec: Tensor, dev: torch.device | None) -> None:
        if dev is not None and dev != vec.device:  # the seed: compute on the losses' device, σ stays put
            self._warn_once(
                "device",
                f"Losses are on {vec.device} but AutomaticWeightedLoss's parameters are on {dev}: computing on "
                f"{vec.device} like the seed, with the parameters left on {dev} (their gradient is copied back "
                f"at every step). `awl.to({str(vec.device)!r})` before building the optimizer is faster.",
            )

    def forward(self, losses: Tensor) -> Tensor:
        k = self.__dict__.pop("_given", None)
        if k is None and losses.shape[0] < (self.num_tasks or 0):
            k = losses.shape[0]
        if k is not None:
            losses = losses[:k]
        if self.parameterization == "log_variance":
            s, factor = self._log_var(), self.factor
            if k is not None:
                s, factor = s[:k], factor[:k]
            if s.device != losses.device:
                s, factor = s.to(losses.device), factor.to(losses.device)
            return self._weigh(s, factor, losses)
        return self._seed_forward(losses)

    def _seed_forward(self, losses: Tensor) -> Tensor:
        p, k = self.params, losses.shape[0]
        if self.mask_zero_losses or p.device != losses.device or torch.compiler.is_compiling():
            # not the seed, σ elsewhere, or compiled (the compiler fuses the ops anyway): the seed's loop
            total, weights = _seed.seed_objective(p, losses, self.task_types, self.mask_zero_losses)
        else:  # one fused node, the seed's values and gradients bit for bit (see _awl_kernel)
            types = self.task_types[:k]
            num = _FACTORS[types[0]] if len(set(types)) == 1 else self.factor[:k]
            index = None
            if losses.device.type == "cpu":
                index = self.__dict__.get("_seed_index")
                if index is None or index.shape[0] != k:
                    index = self.__dict__["_seed_index"] = torch.zeros(k, dtype=torch.long)
            sigma = p if k == p.shape[0] else p[:k]
            # (torch leaves Function.apply unannotated)
            total, weights = SeedObjective.apply(sigma, losses, num, index)  # type: ignore[no-untyped-call]
        self._set_weights(weights)
        return total

    # ------------------------------------------------------------- the seed's checkpoints
    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        _seed.convert_state(state_dict, prefix, self.parameterization)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, parameterization={self.parameterization!r}"
