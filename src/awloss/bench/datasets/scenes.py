"""Procedural indoor scenes: semantic segmentation (6 classes) + depth + surface normals, NYUv2 metrics.

Scenes are rendered with numpy from a fixed seed (see ``_render.py``), so nothing is downloaded and the
labels are exact. Losses as in MTAN/NYUv2: cross-entropy, L1 on depth, 1 − cos on normals. Metrics (the
NYUv2 set): mIoU↑, pixel accuracy↑, depth abs↓ and rel↓ error, normal angle mean↓ / median↓ and the
share of pixels within 11.25°↑ / 22.5°↑ / 30°↑. ``--data-args depth_noise=0.5`` adds known Gaussian
noise to the training depth, to check that a learned σ follows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..models import seg_model
from ._base import Data, DatasetSpec, Metric, Split, atomic_savez, cache_dir, read_npz_cache
from ._render import CLASSES, make_scenes

CACHE_VERSION = 1


class Scenes(DatasetSpec):
    name = "scenes"
    description = "procedural indoor scenes: segmentation + depth + normals (NYUv2 metric set), TinySegNet"
    source = "generated with numpy from a seed (no data files)"
    install = ""
    tasks = ("segmentation", "depth", "normals")
    defaults = {"epochs": 20, "batch_size": 16, "lr": 1e-3, "size": 64, "n_train": 1000,
                                "n_val": 200, "n_test": 200, "depth_noise": 0.0}  # fmt: skip
    quick = {"epochs": 1, "batch_size": 8, "size": 32, "n_train": 24, "n_val": 8, "n_test": 8}

    def _scenes(self, n: int, seed: int) -> list[np.ndarray]:
        size = int(self.config.get("size", 64))
        path = cache_dir("data") / f"scenes_v{CACHE_VERSION}_{size}_{n}_{seed}.npz"
        cached = read_npz_cache(path, [f"a{i}" for i in range(5)])
        if cached is not None:
            return cached
        arrays = make_scenes(n, seed, size)
        atomic_savez(path, compressed=True, **{f"a{i}": a for i, a in enumerate(arrays)})
        return arrays

    def _split(self, n: int, seed: int, noise: float = 0.0) -> Split:
        rgb, sem, depth, normals, _ = self._scenes(n, seed)
        depth_t = torch.from_numpy(depth).unsqueeze(1)
        if noise > 0:
            g = torch.Generator().manual_seed(seed + 12345)
            depth_t = depth_t + noise * torch.randn(depth_t.shape, generator=g)
        return Split(
            torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous(),
            [torch.from_numpy(sem), depth_t, torch.from_numpy(normals).permute(0, 3, 1, 2).contiguous()],
        )

    def load(self) -> Data:
        c = self.config
        noise = float(c.get("depth_noise", 0.0))
        train = self._split(int(c.get("n_train", 1000)), 1, noise)
        val = self._split(int(c.get("n_val", 200)), 2)
        test = self._split(int(c.get("n_test", 200)), 3)
        return self.apply_sizes(Data(train, val, test, info={"classes": list(CLASSES), "depth_noise": noise}))

    def build_model(self) -> nn.Module:
        return seg_model([len(CLASSES), 1, 3])

    def metrics(self) -> list[Metric]:
        return [Metric("miou", "segmentation", True), Metric("pix_acc", "segmentation", True),
                Metric("depth_abs", "depth", False), Metric("depth_rel", "depth", False),
                Metric("normal_mean", "normals", False, "deg"), Metric("normal_median", "normals", False, "deg"),
                Metric("within_11.25", "normals", True, "%"), Metric("within_22.5", "normals", True, "%"),
                Metric("within_30", "normals", True, "%")]  # fmt: skip

    def task_losses(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> list[Tensor]:
        seg, depth, normal = preds
        cos = nn.functional.cosine_similarity(normal, targets[2], dim=1)
        return [nn.functional.cross_entropy(seg, targets[0]), (depth - targets[1]).abs().mean(), (1 - cos).mean()]

    def evaluate(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> dict[str, float]:
        seg, depth, normal = preds
        label = seg.argmax(1)
        ious = []
        for k in range(len(CLASSES)):
            inter = ((label == k) & (targets[0] == k)).sum()
            union = ((label == k) | (targets[0] == k)).sum()
            if union > 0:
                ious.append(float(inter) / float(union))
        err = (depth - targets[1]).abs()
        cos = nn.functional.cosine_similarity(normal, targets[2], dim=1).clamp(-1, 1)
        ang = torch.rad2deg(torch.acos(cos)).reshape(-1)
        return {
            "miou": float(np.mean(ious)), "pix_acc": float((label == targets[0]).float().mean()),
            "depth_abs": float(err.mean()), "depth_rel": float((err / targets[1].abs().clamp_min(1e-3)).mean()),
            "normal_mean": float(ang.mean()), "normal_median": float(ang.median()),
            "within_11.25": 100 * float((ang < 11.25).float().mean()),
            "within_22.5": 100 * float((ang < 22.5).float().mean()), "within_30": 100 * float((ang < 30).float().mean()),
        }  # fmt: skip
