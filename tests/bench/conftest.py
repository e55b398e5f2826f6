"""Shared fixtures of the bench tests: an isolated cache and small CSV tables written by the tests."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    real = Path(os.environ.get("AWLOSS_CACHE") or Path.home() / ".cache" / "awloss")
    monkeypatch.setenv("AWLOSS_DATA_DIR", os.environ.get("AWLOSS_DATA_DIR") or str(real / "data"))
    monkeypatch.setenv("AWLOSS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def write_csv(path: Path, n: int = 160, *, seed: int = 0, nan_rows: int = 0, text_feature: bool = True) -> Path:
    """Columns x1, x2, x3 (numeric), city (text), a (regression, scale 1000), b (3 integer classes), split."""
    rng = random.Random(seed)
    lines = ["x1,x2,x3,city,a,b,part"]
    for i in range(n):
        x = [rng.gauss(0, 1) for _ in range(3)]
        a = 1000 * (2 * x[0] - x[1] + 0.3 * rng.gauss(0, 1))
        b = int(x[2] + 0.5 * x[0] > 0) + int(x[1] > 1)
        a_txt = "" if i < nan_rows else f"{a:.2f}"
        part = "train" if i % 5 < 3 else ("val" if i % 5 == 3 else "test")
        city = rng.choice(["Paris", "Lyon"]) if text_feature else f"{rng.random():.3f}"
        lines.append(f"{x[0]:.4f},{x[1]:.4f},{x[2]:.4f},{city},{a_txt},{b},{part}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def make_csv():
    return write_csv


@pytest.fixture
def some_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "some.csv")
