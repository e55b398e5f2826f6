"""QM9 with Nash-MTL's 11 targets, from PyPI ``qm9pack`` (no graph library needed).

Targets (PyG indices 0,1,2,3,5,6,12,13,14,15,11): mu [D], alpha [a0³], homo, lumo, zpve [eV],
r2 [a0²], the atomization energies U0, U, H, G [eV] (E − Σ atom references), Cv [cal/(mol K)].
Split: shuffle (seed 0), 10k test, 10k validation, the rest (110,831) train. Metric: MAE per target,
with homo, lumo, zpve and the four energies in meV, as reported by Nash-MTL, CAGrad and FAMO.
Input: sorted Coulomb-matrix eigenvalues (29) + element counts (5), a dense MLP instead of their MPNN.
``qm9`` trains on standardised targets; ``qm9-raw`` only centres them (raw units: the scale imbalance
a weighting method has to remove by itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..models import mlp_model
from ._base import Data, DatasetSpec, Metric, Split, atomic_savez, cache_dir, pkg_dir, read_npz_cache, require

INSTALL = "pip install qm9pack==1.0.3"
HARTREE_EV = 27.211386246
ELEMENTS = ("H", "C", "N", "O", "F")
Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
# Atom reference energies in Hartree for U0, U, H, G (QM9's atomref table).
ATOMREF = {
    "H": (-0.500273, -0.498857, -0.497912, -0.510927),
    "C": (-37.846772, -37.845355, -37.844411, -37.861317),
    "N": (-54.583861, -54.582445, -54.581501, -54.598897),
    "O": (-75.064579, -75.063163, -75.062219, -75.079532),
    "F": (-99.718730, -99.717314, -99.716370, -99.733544),
}
TARGETS = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "U0", "U", "H", "G", "Cv")
UNITS = ("D", "a0^3", "meV", "meV", "a0^2", "meV", "meV", "meV", "meV", "meV", "cal/molK")
TO_REPORT = np.array([1, 1, 1000, 1000, 1, 1000, 1000, 1000, 1000, 1000, 1], np.float64)
CACHE_VERSION = 1


def load_qm9_frame() -> Any:
    """All 130,831 molecules of ``qm9pack`` as one pandas frame (reads its CSVs; never imports it)."""
    pd = require("pandas", INSTALL)
    d = pkg_dir("qm9pack", INSTALL) / "data"
    return pd.concat([pd.read_csv(d / f"qm9_part{i}.csv") for i in (1, 2, 3)], ignore_index=True)


def _targets(df: Any) -> np.ndarray:
    """``[N, 11]`` targets in PyG units (eV for energies)."""
    counts = np.stack([df["Elements"].str.count(f"'{e}'").to_numpy() for e in ELEMENTS], 1).astype(np.float64)
    ref = np.array([ATOMREF[e] for e in ELEMENTS])  # [5, 4]
    energies = df[["InternalEnergy_0K_au", "InternalEnergy_298K_au", "Enthalphy_298K_au",
                   "GibbsFreeEnergy_298K_au"]].to_numpy(np.float64)  # fmt: skip
    atomization = (energies - counts @ ref) * HARTREE_EV
    return np.column_stack([
        df["Dipole_debye"], df["Polarizability_bohr3"], df["HOMO_au"] * HARTREE_EV, df["LUMO_au"] * HARTREE_EV,
        df["R2_bohr2"], df["ZPVE_au"] * HARTREE_EV, atomization, df["Heatcapacity_Cv_cal_mol_K"],
    ]).astype(np.float64)  # fmt: skip


def _features(df: Any, chunk: int = 8192) -> np.ndarray:
    """Sorted Coulomb-matrix eigenvalues (29, atomic units) and element counts (5): ``[N, 34]``."""
    n = len(df)
    zs = np.zeros((n, 29))
    xyz = np.zeros((n, 29, 3))
    for i, (el, pos) in enumerate(zip(df["Elements"], df["XYZ_Ang"])):
        names = el.replace("'", "").strip("[]").split(",")
        zs[i, : len(names)] = [Z[e.strip()] for e in names]
        xyz[i, : len(names)] = np.array(pos.replace("[", "").replace("]", "").split(","), float).reshape(-1, 3)
    xyz *= 1.8897261246  # Å -> bohr
    eig = np.zeros((n, 29))
    for s in range(0, n, chunk):
        z, r = zs[s : s + chunk], xyz[s : s + chunk]
        dist = np.linalg.norm(r[:, :, None] - r[:, None], axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            m = z[:, :, None] * z[:, None] / dist
        idx = np.arange(29)
        m[:, idx, idx] = 0.5 * z**2.4
        m = np.nan_to_num(m, nan=0.0, posinf=0.0)
        ev = np.linalg.eigvalsh(m)
        eig[s : s + chunk] = np.take_along_axis(ev, np.argsort(-np.abs(ev), axis=1), axis=1)
    counts = np.stack([(zs == Z[e]).sum(1) for e in ELEMENTS], 1)
    return np.concatenate([eig, counts], 1).astype(np.float32)


def load_qm9_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(features ``[N, 34]``, targets ``[N, 11]`` in PyG units), cached in ``~/.cache/awloss/data``."""
    path = cache_dir("data") / f"qm9_cm_v{CACHE_VERSION}.npz"
    cached = read_npz_cache(path, ("x", "y"))
    if cached is not None:
        return cached[0], cached[1]
    df = load_qm9_frame()
    x, y = _features(df), _targets(df)
    atomic_savez(path, x=x, y=y)
    return x, y


class QM9(DatasetSpec):
    name = "qm9"
    description = "QM9, 11 regression targets (Nash-MTL protocol), standardised targets, Coulomb-matrix MLP"
    source = "PyPI qm9pack 1.0.3 (all 130,831 molecules in the wheel)"
    install = INSTALL
    tasks = TARGETS
    standardise = True
    defaults = {"epochs": 50, "batch_size": 120, "lr": 1e-3}
    quick = {"epochs": 1, "batch_size": 64, "train_size": 512, "val_size": 256, "test_size": 256}

    def load(self) -> Data:
        x, y = load_qm9_arrays()
        perm = np.random.default_rng(0).permutation(len(x))
        te, va, tr = perm[:10000], perm[10000:20000], perm[20000:]
        xm, xs = x[tr].mean(0), x[tr].std(0) + 1e-6
        self.y_mean = torch.tensor(y[tr].mean(0))
        self.y_scale = torch.tensor(y[tr].std(0) if self.standardise else np.ones(y.shape[1]))

        def split(i: np.ndarray) -> Split:
            xt = torch.from_numpy((x[i] - xm) / xs).float()
            yt = (torch.from_numpy(y[i]) - self.y_mean) / self.y_scale
            return Split(xt, [yt[:, k].float() for k in range(yt.shape[1])])

        info = {"target_std_pyg_units": dict(zip(TARGETS, y[tr].std(0).round(4).tolist()))}
        return self.apply_sizes(Data(split(tr), split(va), split(te), info=info))

    def build_model(self) -> nn.Module:
        return mlp_model(34, (256, 256), (), [1] * 11)  # linear heads, like the MPNN of Nash-MTL

    def metrics(self) -> list[Metric]:
        return [Metric(f"{t}", t, False, u) for t, u in zip(TARGETS, UNITS)]

    def task_losses(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> list[Tensor]:
        return [nn.functional.mse_loss(p.squeeze(-1), t) for p, t in zip(preds, targets)]

    def evaluate(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> dict[str, float]:
        out = {}
        for k, (p, t) in enumerate(zip(preds, targets)):
            err = (p.squeeze(-1).double() - t.double()).abs().mean() * self.y_scale[k] * TO_REPORT[k]
            out[TARGETS[k]] = float(err)
        return out


class QM9Raw(QM9):
    name = "qm9-raw"
    aliases = ("qm9raw",)
    description = "QM9 as `qm9` but targets only centred (raw PyG units): tests whether a weighting fixes scales"
    standardise = False
