"""The user's own table (CSV or Parquet): ``awloss bench --dataset table:PATH --targets y1,y2``.

An MLP trunk (64-64, ReLU) with one head (32 units) per target, standardised features (train mean and
std; a missing feature value takes the train mean). Regression targets are trained on standardised values
with MSE and scored by MAE and RMSE in their own units; classification targets by cross-entropy, accuracy
and macro-F1 (%). A target's type, when not given, is inferred and stated: non-numeric, or integer-valued
with at most 20 distinct values → classification; else regression. Split: a column holding
train/val/test, or fractions (default 0.7,0.15,0.15 after a shuffle with seed 0).
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..models import mlp_model
from ._base import BenchError, Data, DatasetSpec, Metric, Split, require

__all__ = ["TableDataset", "table"]

MAX_CLASSES = 20
MISSING = {"", "na", "nan", "null", "none", "n/a", "?"}
SPLIT_NAMES = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "dev": 1, "test": 2, "testing": 2}
PARQUET_INSTALL = "pip install pandas pyarrow"


def _names(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def _number(v: Any) -> float | None:
    """``float(v)``, NaN for a missing value, ``None`` when ``v`` is not a number."""
    if v is None:
        return math.nan
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    text = str(v).strip()
    if text.lower() in MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def read_columns(path: Path) -> dict[str, list[Any]]:
    """The table as ``{column: values}``: CSV/TSV by the ``csv`` module, Parquet by pandas (+ pyarrow)."""
    if not path.is_file():
        raise BenchError(f"table: file not found: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        pd = require("pandas", PARQUET_INSTALL)
        try:
            frame = pd.read_parquet(path)
        except ImportError as e:
            raise BenchError(f"table: reading Parquet needs pyarrow; install with: {PARQUET_INSTALL} ({e})") from None
        except Exception as e:  # noqa: BLE001 - a broken file: one line, whatever the engine raises
            raise BenchError(f"table: cannot read {path} as Parquet: {type(e).__name__}: {e}") from None
        return {str(c): frame[c].tolist() for c in frame.columns}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(65536)
            f.seek(0)
            delimiter = "\t" if path.suffix.lower() == ".tsv" or sample.count("\t") > sample.count(",") else ","
            rows = list(csv.reader(f, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BenchError(f"table: cannot read {path} as CSV: {type(e).__name__}: {e}") from None
    if len(rows) < 2:
        raise BenchError(f"table: {path} has no data rows (a header line and at least one row are needed)")
    header = [h.strip() for h in rows[0]]
    cols: dict[str, list[Any]] = {h: [] for h in header}
    for i, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise BenchError(f"table: line {i} of {path} has {len(row)} fields, the header has {len(header)}")
        for h, v in zip(header, row):
            cols[h].append(v)
    return cols


def _split_indices(n: int, split: Any, column: list[Any] | None, name: str) -> list[Tensor]:
    if column is not None:
        codes = []
        for i, v in enumerate(column):
            key = str(v).strip().lower()
            if key not in SPLIT_NAMES:
                raise BenchError(f"table: split column {name!r} holds {v!r} in row {i + 1}; "
                                 "expected train/val/test (or training/valid/validation/dev/testing)")  # fmt: skip
            codes.append(SPLIT_NAMES[key])
        c = torch.tensor(codes)
        out = [torch.nonzero(c == k).reshape(-1) for k in range(3)]
    else:
        try:
            fr = [float(v) for v in _names(split)] if split else [0.7, 0.15, 0.15]
        except ValueError:
            fr = []
        if len(fr) != 3 or min(fr) <= 0 or abs(sum(fr) - 1) > 1e-6:
            raise BenchError(f"--split expects a column name or three fractions > 0 summing to 1, got {split!r}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        a, b = round(n * fr[0]), round(n * (fr[0] + fr[1]))
        out = [perm[:a], perm[a:b], perm[b:]]
    for k, idx in zip(("train", "val", "test"), out):
        if len(idx) == 0:
            raise BenchError(f"table: the {k} split is empty ({n} rows); use more rows or other --split fractions")
    return out


class TableDataset(DatasetSpec):
    """A CSV / Parquet file: ``config`` holds ``path``, ``targets`` and optionally ``task_types``,
    ``features`` (a list, or ``all-other-numeric``, the default) and ``split``."""

    name = "table"
    description = "your CSV/Parquet file: table:PATH --targets a,b [--task-types] [--features] [--split]"
    source = "a local file"
    defaults = {"epochs": 20, "batch_size": 64, "lr": 1e-3}
    quick = {"epochs": 2, "train_size": 256, "val_size": 128, "test_size": 128}
    options = {"path": "", "targets": "", "task_types": "", "features": "", "split": ""}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        path = Path(str(self.config.get("path", ""))).expanduser()
        if not str(self.config.get("path", "")):
            raise BenchError("table: no file given; use --dataset table:PATH")
        if not path.is_file():
            raise BenchError(f"table: file not found: {path}")
        self.config["path"] = str(path.resolve())
        self.config["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]  # the caches follow the file
        self.name = f"table-{path.stem}"
        targets = _names(self.config.get("targets"))
        if len(targets) < 2:
            raise BenchError(f"--targets needs at least 2 target columns (a multi-task benchmark), got {len(targets)}"
                             f"{': ' + targets[0] if targets else ''}")  # fmt: skip
        if len(set(targets)) < len(targets):
            raise BenchError(f"--targets names a column twice: {','.join(targets)}")
        self.tasks = tuple(targets)  # type: ignore[misc]
        self.loaded: Data | None = None

    def load(self) -> Data:
        c = self.config
        path = Path(c["path"])
        cols = read_columns(path)
        columns = ", ".join(list(cols)[:20]) + (" …" if len(cols) > 20 else "")
        split_col = c.get("split") if isinstance(c.get("split"), str) and c["split"] in cols else None
        for t in self.tasks:
            if t not in cols:
                raise BenchError(f"table: target column {t!r} not in {path.name}; columns: {columns}")
        n = len(next(iter(cols.values())))
        types = _names(c.get("task_types"))
        if types and len(types) != len(self.tasks):
            raise BenchError(f"--task-types gives {len(types)} types for {len(self.tasks)} targets")
        alias = {"r": "regression", "reg": "regression", "regression": "regression",
                 "c": "classification", "cls": "classification", "class": "classification",
                 "classification": "classification"}  # fmt: skip
        for ty in types:
            if ty.lower() not in alias:
                raise BenchError(f"--task-types: unknown type {ty!r}; use regression or classification")
        ys, kinds, notes, classes = [], [], [], []
        for i, t in enumerate(self.tasks):
            raw = cols[t]
            nums = [_number(v) for v in raw]
            missing = sum(1 for v, x in zip(raw, nums) if x is not None and math.isnan(x))
            if missing:
                raise BenchError(f"table: target {t!r} has no value (NaN or empty) in {missing} of {n} rows; "
                                 "drop or fill those rows")  # fmt: skip
            numeric = all(x is not None for x in nums)
            levels = sorted(set(nums if numeric else (str(v).strip() for v in raw)), key=lambda v: (str(type(v)), v))
            integer = numeric and all(float(x).is_integer() for x in nums)  # type: ignore[arg-type]
            if types:
                kind, why = alias[types[i].lower()], "given"
            elif not numeric:
                kind, why = "classification", f"inferred: non-numeric, {len(levels)} levels"
            elif integer and len(levels) <= MAX_CLASSES:
                kind, why = "classification", f"inferred: {len(levels)} integer levels"
            else:
                kind, why = "regression", f"inferred: {len(levels)} distinct numeric values"
            if kind == "regression" and not numeric:
                bad = next(v for v, x in zip(raw, nums) if x is None)
                raise BenchError(f"table: target {t!r} is not numeric ({bad!r}) and cannot be a regression")
            if kind == "classification":
                if len(levels) < 2:
                    raise BenchError(f"table: target {t!r} has a single class ({levels[0]!r}); nothing to learn")
                code = {v: k for k, v in enumerate(levels)}
                ys.append(torch.tensor([code[x if numeric else str(v).strip()] for v, x in zip(raw, nums)]))
                classes.append([str(v) for v in levels])
            else:
                ys.append(torch.tensor(nums, dtype=torch.float64))
                classes.append([])
            kinds.append(kind)
            notes.append(f"{t}: {kind} ({why})")
        feats = _names(c.get("features"))
        skipped: list[str] = []
        if not feats or feats == ["all-other-numeric"]:
            used = set(self.tasks) | ({split_col} if split_col else set())
            for col, vals in cols.items():
                if col in used:
                    continue
                nums = [_number(v) for v in vals]
                (skipped if any(x is None for x in nums) or all(math.isnan(x) for x in nums) else feats).append(col)  # type: ignore[arg-type]
            feats = [f for f in feats if f != "all-other-numeric"]
            if not feats:
                raise BenchError(f"table: no numeric feature column besides the targets in {path.name}; columns: {columns}")
        x_cols = []
        for f in feats:
            if f not in cols:
                raise BenchError(f"table: feature column {f!r} not in {path.name}; columns: {columns}")
            if f in self.tasks:
                raise BenchError(f"table: {f!r} is both a target and a feature")
            nums = [_number(v) for v in cols[f]]
            bad = next(((i, v) for i, (v, x) in enumerate(zip(cols[f], nums)) if x is None), None)
            if bad is not None:
                raise BenchError(f"table: feature {f!r} is not numeric (row {bad[0] + 1}: {bad[1]!r}); "
                                 "encode it as numbers or leave it out of --features")  # fmt: skip
            x_cols.append(nums)
        split_values = cols[split_col] if split_col else None
        if c.get("split") and split_col is None and not any(ch.isdigit() for ch in str(c["split"])):
            raise BenchError(f"table: split column {c['split']!r} not in {path.name}; columns: {columns}")
        idx = _split_indices(n, c.get("split"), split_values, str(c.get("split")))
        x = torch.tensor(x_cols, dtype=torch.float64).T.contiguous()
        tr = x[idx[0]]
        mean = torch.nanmean(tr, 0).nan_to_num(0.0)
        x = torch.where(torch.isnan(x), mean, x)
        std = x[idx[0]].std(0, unbiased=False) if len(idx[0]) > 1 else torch.ones(x.shape[1], dtype=torch.float64)
        x = ((x - mean) / torch.where(std > 0, std, torch.ones_like(std))).float()
        self.kinds, self.classes, self.in_dim = kinds, classes, int(x.shape[1])
        self.y_mean = [float(y[idx[0]].mean()) if k == "regression" else 0.0 for y, k in zip(ys, kinds)]
        self.y_std = [max(float(y[idx[0]].std(unbiased=False)), 1e-12) if k == "regression" and len(idx[0]) > 1
                      else 1.0 for y, k in zip(ys, kinds)]  # fmt: skip
        ys = [y.float() if k == "regression" else y for y, k in zip(ys, kinds)]
        splits = [Split(x[i], [y[i] for y in ys]) for i in idx]
        info = {"file": str(path), "rows": n, "features": feats, "ignored_columns": skipped, "task_types": kinds,
                "tasks_stated": notes, "classes": classes}  # fmt: skip
        train, val, test = splits
        self.loaded = self.apply_sizes(Data(train, val, test, info=info))
        return self.loaded

    def _need(self) -> None:
        if not hasattr(self, "kinds"):
            self.load()

    def build_model(self) -> nn.Module:
        self._need()
        out = [1 if k == "regression" else len(c) for k, c in zip(self.kinds, self.classes)]
        return mlp_model(self.in_dim, (64, 64), (32,), out)

    def metrics(self) -> list[Metric]:
        self._need()
        out = []
        for t, k in zip(self.tasks, self.kinds):
            if k == "regression":
                out += [Metric(f"mae_{t}", t, False), Metric(f"rmse_{t}", t, False)]
            else:
                out += [Metric(f"acc_{t}", t, True, "%"), Metric(f"f1_{t}", t, True, "%")]
        return out

    def task_losses(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for p, y, k, m, s in zip(preds, targets, self.kinds, self.y_mean, self.y_std):
            if k == "regression":
                out.append(nn.functional.mse_loss(p.squeeze(-1), (y - m) / s))
            else:
                out.append(nn.functional.cross_entropy(p, y))
        return out

    def evaluate(self, preds: Sequence[Tensor], targets: Sequence[Tensor]) -> dict[str, float]:
        out: dict[str, float] = {}
        for t, p, y, k, m, s in zip(self.tasks, preds, targets, self.kinds, self.y_mean, self.y_std):
            if k == "regression":
                err = p.squeeze(-1).double() * s + m - y.double()
                out[f"mae_{t}"] = float(err.abs().mean())
                out[f"rmse_{t}"] = float(err.pow(2).mean().sqrt())
            else:
                label = p.argmax(1)
                out[f"acc_{t}"] = 100 * float((label == y).float().mean())
                f1s = []
                for c in range(p.shape[1]):
                    tp = float(((label == c) & (y == c)).sum())
                    denom = float((label == c).sum() + (y == c).sum())
                    if float((y == c).sum()) > 0:
                        f1s.append(2 * tp / denom if denom else 0.0)
                out[f"f1_{t}"] = 100 * sum(f1s) / max(len(f1s), 1)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["loaded"] = None  # the worker processes get the splits separately
        return state


def table(path: str | Path, targets: Sequence[str] | str, *, task_types: Sequence[str] | str | None = None,
          features: Sequence[str] | str | None = None, split: str | None = None) -> TableDataset:  # fmt: skip
    """A :class:`TableDataset` for ``awloss.bench.run``: ``run(table("data.csv", ["y1", "y2"]), seeds=3)``."""
    return TableDataset({"path": str(path), "targets": _names(targets), "task_types": _names(task_types),
                         "features": _names(features), "split": split or ""})  # fmt: skip
