"""Synthetic multi-regression with known task noise and scales (needs nothing beyond torch).

``x ~ N(0, I_16)``, a fixed random shared representation ``h = tanh(x A)`` (8 units), and task ``t``'s
target ``y_t = s_t · (f_t(h) + σ_t ε)`` with ``f_t`` a fixed random function of ``h`` of unit variance.
Defaults: scales ``s = (1, 10, 100)``, noise ``σ = (0.1, 0.5, 1.0)``: tasks differ both in units and in
noise, the two things loss weighting is meant to handle. Metric: MAE against the *noise-free* target,
in each task's units. The train set is small so that sharing the trunk pays off over single-task models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..models import mlp_model
from ._base import BenchError, Data, DatasetSpec, Metric, Split
from ._metrics import mae


def _floats(value: Any, default: tuple[float, ...]) -> tuple[float, ...]:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return (float(value),)
    if isinstance(value, str):
        return tuple(float(v) for v in value.split(",") if v.strip())
    return tuple(float(v) for v in value)


class Synthetic(DatasetSpec):
    name = "synthetic"
    description = "synthetic 3-task regression with known noise σ=(0.1,0.5,1) and scales (1,10,100)"
    source = "generated with torch from a seed (no data files, no extra package)"
    install = ""
    defaults = {"epochs": 30, "batch_size": 64, "lr": 1e-3, "n_train": 1000, "n_val": 1000,
                                "n_test": 2000, "noise": "0.1,0.5,1.0", "scales": "1,10,100"}  # fmt: skip
    quick = {"epochs": 2, "batch_size": 64, "n_train": 256, "n_val": 128, "n_test": 128}

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        text: dict[str, Any] = {k: options.pop(k) for k in ("noise", "scales") if k in options}
        super().check_options(options)
        options.update(text)
        for key, value in text.items():
            try:
                vals = _floats(value, ())
            except (TypeError, ValueError):
                vals = ()
            if not vals or not all(v == v and abs(v) != float("inf") and v >= 0 for v in vals):
                raise BenchError(f"--data-args: {key} must be one number >= 0 or a comma list of them, got {value!r}")

    @property
    def tasks(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(f"y{i}" for i in range(len(self._noise())))

    def _noise(self) -> tuple[float, ...]:
        return _floats(self.config.get("noise"), (0.1, 0.5, 1.0))

    def _scales(self) -> tuple[float, ...]:
        s = _floats(self.config.get("scales"), (1.0, 10.0, 100.0))
        return s if len(s) == len(self._noise()) else (s + (1.0,) * len(self._noise()))[: len(self._noise())]

    def load(self) -> Data:
        g = torch.Generator().manual_seed(0)
        noise, scales = torch.tensor(self._noise()), torch.tensor(self._scales())
        T = len(noise)
        A = torch.randn(16, 8, generator=g) / 4**0.5
        W1 = torch.randn(T, 8, 16, generator=g) / 8**0.5
        w2 = torch.randn(T, 16, generator=g) / 16**0.5

        def f(x: Tensor) -> Tensor:
            h = torch.tanh(x @ A)
            return torch.einsum("tk,ntk->nt", w2, torch.tanh(torch.einsum("nh,thk->ntk", h, W1)))

        # unit-variance task functions (statistics from a large fixed sample)
        ref = f(torch.randn(20000, 16, generator=g))
        mu, sd = ref.mean(0), ref.std(0)

        def split(n: int) -> Split:
            x = torch.randn(n, 16, generator=g)
            clean = (f(x) - mu) / sd * scales
            noisy = clean + torch.randn(n, T, generator=g) * noise * scales
            return Split(x, [torch.stack([noisy[:, t], clean[:, t]], 1) for t in range(T)])

        c = self.config
        train, val, test = split(int(c.get("n_train", 1000))), split(int(c.get("n_val", 1000))), split(int(c.get("n_test", 2000)))
        self.scales = scales
        info = {"noise_sigma": list(self._noise()), "scales": list(self._scales()),
                "kendall_optimal_weight": [1 / (2 * (n * s) ** 2) for n, s in zip(self._noise(), self._scales())]}  # fmt: skip
        return self.apply_sizes(Data(train, val, test, info=info))

    def build_model(self) -> nn.Module:
        return mlp_model(16, (64, 64), (32,), [1] * len(self._noise()))

    def metrics(self) -> list[Metric]:
        return [Metric(f"mae_{t}", t, False) for t in self.tasks]

    def task_losses(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> list[Tensor]:
        return [nn.functional.mse_loss(p.squeeze(-1), y[:, 0]) for p, y in zip(preds, targets)]

    def evaluate(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> dict[str, float]:
        return {f"mae_{t}": mae(p.squeeze(-1), y[:, 1]) for t, p, y in zip(self.tasks, preds, targets)}
