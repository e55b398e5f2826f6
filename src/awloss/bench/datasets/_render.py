"""Procedural indoor scenes ray-cast in numpy, with exact per-pixel labels.

A box-shaped room (checkered floor, walls, ceiling) with 2–6 objects on the floor (spheres, boxes
rotated about the vertical axis, capped cylinders); random camera pitch, colours and point light;
Lambertian shading with hard shadows and pixel noise. Per pixel: RGB, semantic class (0 floor, 1 wall,
2 ceiling, 3 sphere, 4 box, 5 cylinder), z-depth, camera-frame unit normal, instance id.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

_A = NDArray[Any]
#: a primitive: (ray origins [N, 3], directions [N, 3]) -> (hit distance [N], normal [N, 3])
_Prim = Callable[[_A, _A], tuple[_A, _A]]

CLASSES = ("floor", "wall", "ceiling", "sphere", "box", "cylinder")
EPS = 1e-4


def _plane(o: _A, d: _A, n: _A, c: float) -> tuple[_A, _A]:
    den = d @ n
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (c - o @ n) / den
    return np.where((den != 0) & (t > EPS), t, np.inf), np.broadcast_to(n, d.shape)


def _sphere(o: _A, d: _A, cen: _A, r: float) -> tuple[_A, _A]:
    oc = o - cen
    b = (d * oc).sum(1)
    disc = b * b - ((oc * oc).sum(1) - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0))
    t = np.where((disc > 0) & (t > EPS), t, np.inf)
    p = o + d * np.where(np.isfinite(t), t, 0)[:, None]
    return t, (p - cen) / r


def _box(o: _A, d: _A, cen: _A, half: _A, ang: float) -> tuple[_A, _A]:
    ca, sa = np.cos(ang), np.sin(ang)
    rot = np.array([[ca, 0, -sa], [0, 1, 0], [sa, 0, ca]])  # world -> local, rotation about y
    ol, dl = (o - cen) @ rot.T, d @ rot.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - ol) / dl, (half - ol) / dl
    tmin = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
    tmax = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
    tn, tf, axis = tmin.max(1), tmax.min(1), tmin.argmax(1)
    t = np.where((tn <= tf) & (tn > EPS), tn, np.inf)
    nl = np.zeros_like(dl)
    ar = np.arange(len(d))
    nl[ar, axis] = -np.sign(dl[ar, axis])
    return t, nl @ rot


def _cylinder(o: _A, d: _A, cen: _A, r: float, h: float) -> tuple[_A, _A]:
    ox, oz = o[:, 0] - cen[0], o[:, 2] - cen[2]
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = ox * d[:, 0] + oz * d[:, 2]
    disc = b * b - a * (ox * ox + oz * oz - r * r)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        tc = (cen[1] + h - o[:, 1]) / d[:, 1]
    y = o[:, 1] + t * d[:, 1]
    ok = (disc > 0) & (t > EPS) & (y >= cen[1]) & (y <= cen[1] + h)
    ts = np.where(ok, t, np.inf)
    ps = o + d * np.where(ok, t, 0)[:, None]
    ns = np.stack([ps[:, 0] - cen[0], np.zeros(len(d)), ps[:, 2] - cen[2]], 1) / r
    pc = o + d * np.nan_to_num(tc, posinf=0, neginf=0)[:, None]
    okc = (tc > EPS) & ((pc[:, 0] - cen[0]) ** 2 + (pc[:, 2] - cen[2]) ** 2 <= r * r)
    tc = np.where(okc, tc, np.inf)
    return np.minimum(ts, tc), np.where((tc < ts)[:, None], np.array([0.0, 1.0, 0.0]), ns)


def render(
    rng: np.random.Generator, size: int = 64, fov: float = 60.0, noise: float = 0.02
) -> tuple[_A, _A, _A, _A, _A]:
    """One scene: (rgb [H,W,3], semantic [H,W], depth [H,W], normals [H,W,3], instance [H,W])."""
    H = W = size
    f = 0.5 * W / np.tan(np.radians(fov) / 2)
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([(jj - W / 2) / f, -(ii - H / 2) / f, np.ones_like(jj)], -1).reshape(-1, 3)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pitch = np.radians(rng.uniform(5, 25))
    cp, sp = np.cos(pitch), np.sin(pitch)
    rc = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # camera -> world (looking down)
    dw, o = d @ rc.T, np.zeros((len(d), 3))
    floor_y = -rng.uniform(1.2, 1.8)
    ceil_y = floor_y + rng.uniform(2.6, 3.2)
    wx, back = rng.uniform(2.5, 4.0), rng.uniform(6, 10)
    planes = [((0.0, 1, 0), floor_y, 0), ((0.0, -1, 0), -ceil_y, 2), ((0.0, 0, -1), -back, 1),
              ((1.0, 0, 0), -wx, 1), ((-1.0, 0, 0), -wx, 1)]  # fmt: skip
    prims: list[tuple[_Prim, int]] = [(functools.partial(_plane, n=np.array(n), c=c), k) for n, c, k in planes]
    cols: list[_A | None] = [None] * 5
    for _ in range(rng.integers(2, 7)):
        typ = int(rng.integers(3, 6))
        x, z = rng.uniform(-wx + 0.6, wx - 0.6), rng.uniform(2.5, back - 0.8)
        fn: _Prim
        if typ == 3:
            r = rng.uniform(0.3, 0.8)
            fn = functools.partial(_sphere, cen=np.array([x, floor_y + r, z]), r=r)
        elif typ == 4:
            hf, a = rng.uniform(0.25, 0.7, 3), rng.uniform(0, np.pi)
            fn = functools.partial(_box, cen=np.array([x, floor_y + hf[1], z]), half=hf, ang=a)
        else:
            r, h = rng.uniform(0.2, 0.5), rng.uniform(0.5, 1.8)
            fn = functools.partial(_cylinder, cen=np.array([x, floor_y, z]), r=r, h=h)
        prims.append((fn, typ))
        cols.append(rng.uniform(0.15, 1.0, 3))
    hits = [fn(o, dw) for fn, _ in prims]
    T = np.stack([h[0] for h in hits], 1)
    best = T.argmin(1)
    ar = np.arange(len(dw))
    t = T[ar, best]
    N = np.stack([h[1] for h in hits], 1)[ar, best]
    sem = np.array([k for _, k in prims])[best]
    inst = np.where(best >= 5, best - 4, 0)
    P = o + dw * t[:, None]
    Nw = np.where(((N * dw).sum(1) > 0)[:, None], -N, N)  # normals face the camera
    alb = np.zeros_like(P)
    wall, floor, ceil = rng.uniform(0.4, 0.9, 3), rng.uniform(0.2, 0.7, 3), rng.uniform(0.7, 1.0, 3)
    chk = ((np.floor(P[:, 0] * 2) + np.floor(P[:, 2] * 2)) % 2)[:, None]
    alb[sem == 0] = (floor * (0.75 + 0.25 * chk))[sem == 0]
    alb[sem == 1], alb[sem == 2] = wall, ceil
    for k in range(5, len(prims)):
        alb[best == k] = cols[k]
    light = np.array([rng.uniform(-wx + 0.5, wx - 0.5), ceil_y - 0.2, rng.uniform(1.5, back - 1)])
    L = light - P
    dist = np.linalg.norm(L, axis=1, keepdims=True)
    L /= dist
    shade = np.clip((Nw * L).sum(1), 0, 1)
    po = P + Nw * 1e-3
    for fn, _ in prims[5:]:  # hard shadows from the objects
        shade = np.where(fn(po, L)[0] < dist[:, 0], 0.0, shade)
    img = alb * (0.25 + 0.75 * shade[:, None] * np.minimum(1.0, 9.0 / dist**2))
    img = np.clip(img + rng.normal(0, noise, img.shape), 0, 1)
    depth = t * (dw @ rc[:, 2])
    return (img.reshape(H, W, 3).astype(np.float32), sem.reshape(H, W).astype(np.int64),
            depth.reshape(H, W).astype(np.float32), (Nw @ rc).reshape(H, W, 3).astype(np.float32),
            inst.reshape(H, W).astype(np.int16))  # fmt: skip


def make_scenes(n: int, seed: int, size: int = 64) -> list[np.ndarray]:
    """``n`` scenes from ``seed``: stacked (rgb, semantic, depth, normals, instance)."""
    rng = np.random.default_rng(seed)
    return [np.stack(a) for a in zip(*(render(rng, size) for _ in range(n)))]
