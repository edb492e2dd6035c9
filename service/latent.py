"""Latent-space arithmetic on numpy: interpolation paths and concept edits. No I/O, no models.

Computed in float64 and returned as float32, so that the rounding of the path does not depend on
the BLAS a replica happens to use.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Method = Literal["linear", "spherical"]
METHODS: tuple[Method, ...] = ("linear", "spherical")
# Below this sin(angle) two directions count as parallel (or opposite): the slerp weights
# sin(t * omega) / sin(omega) lose their precision there.
PARALLEL_SIN = 1e-6


def _ts(steps: int) -> np.ndarray:
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    return np.linspace(0.0, 1.0, steps)


def lerp(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """`steps` points (1 - t) a + t b for t evenly from 0 to 1; float32 [steps, L]."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = _ts(steps)[:, None]
    return _pinned((1.0 - t) * a64 + t * b64, a, b)


def slerp(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """`steps` points from a to b: the direction moves along the great circle at constant angular
    speed (standard slerp of a/|a| and b/|b|) and the norm linearly from |a| to |b|.

    So each point's norm is (1 - t)|a| + t|b|, between the endpoints' norms; the textbook formula
    applied to the raw vectors overshoots when the norms differ (by 1/(2 cos(omega/2)) at t = 1/2
    as omega nears pi). A zero endpoint or parallel directions give the straight line (which then
    has the same norms); opposite directions turn through a fixed perpendicular direction (in one
    dimension there is none: the straight line).
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = _ts(steps)[:, None]
    na, nb = float(np.linalg.norm(a64)), float(np.linalg.norm(b64))
    if na == 0.0 or nb == 0.0:
        return lerp(a, b, steps)
    u, v = a64 / na, b64 / nb
    cos = float(np.clip(u @ v, -1.0, 1.0))
    sin = float(np.sqrt(max(0.0, 1.0 - cos * cos)))
    if sin < PARALLEL_SIN and cos > 0:
        return lerp(a, b, steps)
    if sin < PARALLEL_SIN:  # opposite: no unique great circle, pick a fixed one
        w = _perpendicular(u)
        if w is None:
            return lerp(a, b, steps)
        omega = np.pi
        direction = np.cos(t * omega) * u + np.sin(t * omega) * w
    else:
        omega = float(np.arctan2(sin, cos))
        direction = (np.sin((1.0 - t) * omega) * u + np.sin(t * omega) * v) / sin
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = (1.0 - t) * na + t * nb
    return _pinned(radius * direction, a, b)


def _perpendicular(u: np.ndarray) -> np.ndarray | None:
    """A unit vector perpendicular to unit `u`, the same every time (None in one dimension)."""
    if u.size < 2:
        return None
    axis = np.zeros_like(u)
    axis[int(np.argmin(np.abs(u)))] = 1.0
    w = axis - (axis @ u) * u
    return w / np.linalg.norm(w)


def _pinned(path: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 path whose first and last rows are exactly the endpoints given (a point beyond
    float32's range becomes infinite, for the caller to refuse)."""
    with np.errstate(over="ignore"):
        out = path.astype(np.float32)
    out[0], out[-1] = a, b
    return out


def interpolate(a: np.ndarray, b: np.ndarray, steps: int, method: Method = "linear") -> np.ndarray:
    """The path of `method` from a to b ([L] each), float32 [steps, L]."""
    if method == "linear":
        return lerp(a, b, steps)
    if method == "spherical":
        return slerp(a, b, steps)
    raise ValueError(f"unknown interpolation method {method!r}; use one of {METHODS}")


def edit(z: np.ndarray, vector: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """z + alpha * v for every row of z [N, L] and every alpha [A]: float32 [N * A, L], row
    i * A + j being z[i] moved by alphas[j]. Alpha 0 gives z itself, bit for bit."""
    z64 = np.asarray(z, np.float64)[:, None, :]
    moved = z64 + np.asarray(alphas, np.float64)[None, :, None] * np.asarray(vector, np.float64)
    return moved.reshape(-1, z64.shape[-1]).astype(np.float32)


def around(mean: np.ndarray, factor: np.ndarray, eps: np.ndarray, scale: float) -> np.ndarray:
    """mean + scale * eps @ factor.T for standard-normal rows eps [n, L]: draws from
    N(mean, scale^2 * factor @ factor.T), row by row (float32 [n, L])."""
    z = np.asarray(mean, np.float64) + scale * (
        np.asarray(eps, np.float64) @ np.asarray(factor, np.float64).T
    )
    return z.astype(np.float32)
