"""Seeded standard-normal noise that any language reproduces, on every replica, run and chunking.

The noise is specified as an algorithm, not as a library call, so that a client in another
language (or a later NumPy) can recompute a seed's latents:

- Generator: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011;
  Random123, as in cuRAND and JAX), with key ``(seed & 0xFFFFFFFF, seed >> 32)``.
- Row ``i``, column block ``j`` (columns ``4j .. 4j+3``) is the block of counter
  ``(i & 0xFFFFFFFF, i >> 32, j, 0)``; its output words are ``x0, x1, x2, x3``.
- Uniforms in (0, 1), exact in float64: ``u(x) = (x + 0.5) * 2**-32`` (never 0, so no log(0)).
- Box-Muller in float64: ``r = sqrt(-2 * log(u(x0)))``, ``t = TWO_PI * u(x1)``; columns ``4j``
  and ``4j+1`` are ``r * cos(t)`` and ``r * sin(t)``; ``x2, x3`` give ``4j+2`` and ``4j+3`` the
  same way. ``TWO_PI`` is the float64 nearest 2*pi. Columns beyond the latent size are dropped.
- Each value is rounded to float32 (round half to even) at the end.

Row ``i`` depends only on the seed and ``i`` (never on n, offset or chunking), and a row's first
columns do not depend on the latent size. sqrt and the products are correctly rounded in IEEE
arithmetic; log, cos and sin are not guaranteed to be, so two libms may differ by one float32
ulp (when a float64 result lies within a float64 ulp of a float32 rounding boundary, about one
value in 2**28). Test vectors: protos/vaeserve/v1/seed_vectors.json.
"""

from __future__ import annotations

import secrets

import numpy as np

MAX_SEED = 2**64 - 1
MAX_ROW = 2**64 - 1  # the counter holds a 64-bit row index
TWO_PI = 6.283185307179586  # float64 nearest 2*pi

_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_CHUNK_BLOCKS = 1 << 13  # Philox blocks per pass: keeps the working arrays in cache (measured)

Words = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def random_seed() -> int:
    """A fresh 64-bit seed for requests that did not bring one (returned to the client)."""
    return secrets.randbits(64)


def philox4x32_10(counter: Words, key: tuple[int, int]) -> Words:
    """Philox4x32-10 on arrays of counter words (uint64 holding 32-bit values); same shapes out.

    uint64 lanes hold each 32x32 -> 64-bit product exactly, so numpy needs no carry tricks; the
    rounds work in place on four words and two products (no temporaries: this is the hot loop).
    """
    c0, c1, c2, c3 = (np.array(c, np.uint64, order="C") for c in np.broadcast_arrays(*counter))
    p0, p1 = np.empty_like(c0), np.empty_like(c0)
    k0, k1 = key
    for _ in range(10):
        np.multiply(c0, _M0, out=p0)
        np.multiply(c2, _M1, out=p1)
        np.right_shift(p1, _SHIFT, out=c0)
        c0 ^= c1
        c0 ^= np.uint64(k0)
        np.bitwise_and(p1, _MASK, out=c1)
        np.right_shift(p0, _SHIFT, out=c2)
        c2 ^= c3
        c2 ^= np.uint64(k1)
        np.bitwise_and(p0, _MASK, out=c3)
        k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


def _uniform(x: np.ndarray) -> np.ndarray:
    """(x + 0.5) / 2**32 in float64: exact, strictly inside (0, 1)."""
    u = x.astype(np.float64)
    u += 0.5
    u *= 2.0**-32
    return u


def rows_float64(seed: int, offset: int, n: int, dim: int) -> np.ndarray:
    """The float64 values before the final rounding, [n, dim]; for tests and other tools."""
    _check(seed, offset, n, dim)
    blocks = -(-dim // 4)
    rows = (np.uint64(offset) + np.arange(n, dtype=np.uint64))[:, None]
    counter = (rows & _MASK, rows >> _SHIFT, np.arange(blocks, dtype=np.uint64), np.uint64(0))
    words = philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))
    out = np.empty((n, blocks, 4), dtype=np.float64)
    angle = np.empty((n, blocks), dtype=np.float64)
    for pair in range(min(2, -(-dim // 2))):  # dim 1 or 2 needs only the first pair
        r = _uniform(words[2 * pair])
        np.log(r, out=r)
        r *= -2.0
        np.sqrt(r, out=r)
        t = _uniform(words[2 * pair + 1])
        t *= TWO_PI
        np.multiply(r, np.cos(t, out=angle), out=out[..., 2 * pair])
        np.multiply(r, np.sin(t, out=angle), out=out[..., 2 * pair + 1])
    return out.reshape(n, 4 * blocks)[:, :dim]


def normal_rows(seed: int, offset: int, n: int, dim: int) -> np.ndarray:
    """Rows offset..offset+n-1 of the seed's standard-normal sequence, float32 [n, dim]."""
    _check(seed, offset, n, dim)
    out = np.empty((n, dim), dtype=np.float32)
    step = max(1, _CHUNK_BLOCKS // max(1, -(-dim // 4)))
    for start in range(0, n, step):
        take = min(step, n - start)
        out[start : start + take] = rows_float64(seed, offset + start, take, dim)  # rounds
    return out


def _check(seed: int, offset: int, n: int, dim: int) -> None:
    """ValueError for what the request checks (checks.py) refuse first: reaching here is a bug."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if offset < 0 or n < 0 or dim < 0:
        raise ValueError(f"offset, n and dim must be >= 0, got {offset}, {n} and {dim}")
    if offset + n > MAX_ROW + 1:
        raise ValueError(f"offset + n must be at most 2**64, got {offset} + {n}")
