"""Seeded standard-normal noise that is the same on every replica, run and chunking.

Row i of a seed's sequence is row i % BLOCK of
`numpy.random.default_rng([seed, i // BLOCK]).standard_normal((BLOCK, dim), dtype=float32)`.
Blocks make any slice [offset, offset + n) cheap to draw without drawing what comes before it,
so a stream can be chunked freely and a client can resume it from any offset, and the answer does
not depend on how requests were batched.
"""

from __future__ import annotations

import secrets

import numpy as np

BLOCK = 256
MAX_SEED = 2**64 - 1


def random_seed() -> int:
    """A fresh 64-bit seed for requests that did not bring one (returned to the client)."""
    return secrets.randbits(64)


def normal_rows(seed: int, offset: int, n: int, dim: int) -> np.ndarray:
    """Rows offset..offset+n-1 of the seed's standard-normal sequence, float32 [n, dim]."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if offset < 0 or n < 0:
        raise ValueError(f"offset and n must be >= 0, got {offset} and {n}")
    out = np.empty((n, dim), dtype=np.float32)
    done = 0
    while done < n:
        block, start = divmod(offset + done, BLOCK)
        take = min(BLOCK - start, n - done)
        rows = np.random.default_rng([seed, block]).standard_normal((BLOCK, dim), dtype=np.float32)
        out[done : done + take] = rows[start : start + take]
        done += take
    return out
