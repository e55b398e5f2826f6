"""The on-device solvers: exactness, and the fixed-iteration (accelerator) code path run on the CPU."""

from __future__ import annotations

import pytest
import torch

from awloss.aggregation import _solvers as S


def gramian(T, kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "rank":
        J = torch.randn(T, max(1, T // 2), generator=g, dtype=torch.float64) @ torch.randn(
            max(1, T // 2), 30, generator=g, dtype=torch.float64)
    else:
        J = torch.randn(T, 30, generator=g, dtype=torch.float64)
        if kind == "ill":
            J = J * torch.logspace(0, -3, T, dtype=torch.float64)[:, None] + 0.5 * J[:1]
    return J @ J.T


CASES = [(T, k, s) for T in (2, 3, 10, 32) for k in ("well", "ill", "rank") for s in range(3)]


@pytest.mark.parametrize(("T", "kind", "seed"), CASES)
def test_sync_free_path_gives_the_same_answers(T, kind, seed, monkeypatch):
    """On accelerators the loops run a fixed number of iterations without host checks."""
    G = gramian(T, kind, seed)
    A = S.normalize_gramian(G, 1e-8)
    B = torch.eye(T, dtype=torch.float64) @ A / T
    fast = [S.nnqp(A, B), S.min_norm_simplex(G), S.cagrad_dual(G, 0.4), S.nash_bargaining(G / G.norm())]
    monkeypatch.setattr(S, "_can_stop_early", lambda t: False)
    slow = [S.nnqp(A, B), S.min_norm_simplex(G), S.cagrad_dual(G, 0.4), S.nash_bargaining(G / G.norm())]
    for i, ((xf, okf), (xs, oks)) in enumerate(zip(fast, slow)):
        if i == 3 and kind == "rank":
            continue  # no bargaining solution without the ridge; both paths are flagged or not alike
        assert bool(okf.all()) and bool(oks.all()), f"solver {i} not converged"
        torch.testing.assert_close(xs, xf, rtol=1e-7, atol=1e-9 * float(xf.abs().max()))


@pytest.mark.parametrize("T", [2, 5, 10, 32])
def test_nnqp_meets_kkt(T):
    for seed in range(5):
        G = gramian(T, "rank", seed)
        A = S.normalize_gramian(G, 1e-8)
        b = torch.randn(4, T, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        x, ok = S.nnqp(A, b)
        assert bool(ok.all()) and (x >= 0).all()
        grad = x @ A + b
        assert (grad >= -1e-8).all() and ((grad.abs() <= 1e-8) | (x == 0)).all()


def test_project_simplex():
    v = torch.tensor([[0.2, 0.3, 0.5], [2.0, 0.0, 0.0], [-1.0, 0.5, 0.6]])
    p = S.project_simplex(v)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(p[0], v[0])
    torch.testing.assert_close(p[1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(p[2], torch.tensor([0.0, 0.45, 0.55]))


def test_cagrad_falls_back_to_the_homotopy_when_the_active_set_cycles(monkeypatch):
    calls = []
    real = S._cagrad_homotopy

    def counting(*args):
        out = real(*args)
        calls.append(bool(out[1]))
        return out

    monkeypatch.setattr(S, "_cagrad_homotopy", counting)
    for seed in range(120):  # rank-deficient systems make the primal-dual active set cycle now and then
        g = torch.Generator().manual_seed(seed)
        J = torch.randn(10, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 50, generator=g, dtype=torch.float64)
        _, ok = S.cagrad_dual(J @ J.T, 0.4)
        assert bool(ok), f"seed {seed}"
    assert calls and all(calls), "the homotopy was exercised and converged every time"
