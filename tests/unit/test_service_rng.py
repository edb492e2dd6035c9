"""Seeded latents: an algorithm (Philox4x32-10, Box-Muller) that other languages reproduce.

The same rows for a seed whatever the offset and chunking; Philox checked against Random123's
known answers; the committed seed vectors checked here (bit for bit) and from Node.js.
Regenerate the vectors after a deliberate contract change with
`python -c "from tests.unit.test_service_rng import write_vectors; write_vectors()"`.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaeserve.service.rng import MAX_SEED, normal_rows, philox4x32_10, rows_float64

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "protos" / "vaeserve" / "v1" / "seed_vectors.json"
NODE_CHECK = REPO / "tests" / "node" / "philox.mjs"

# Random123's tests/kat_vectors, the "philox4x32 10" lines: counter[4] key[2] -> output[4].
KAT_LINES = [
    "00000000 00000000 00000000 00000000 00000000 00000000 6627e8d5 e169c58d bc57ac4c 9b00dbd8",
    "ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff 408f276d 41c83b0e a20bc7c6 6d5451fd",
    "243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0 d16cfe09 94fdcceb 5001e420 24126ea1",
]
KAT = [(w[0:4], w[4:6], w[6:10]) for w in (line.split() for line in KAT_LINES)]

# (seed, offset, n, dim): seeds 0, 1, 2**64-1 and a large odd one; offsets 0, across the 32-bit
# word of the row counter, 2**40 and the last rows a request may reach (offset + n < 2**63).
CASES = [
    (0, 0, 3, 2),
    (0, 0, 2, 7),
    (1, 0, 2, 7),
    (1, 1, 1, 9),
    (MAX_SEED, 0, 2, 2),
    (0x9E3779B97F4A7C15, 2**40, 3, 7),
    (12345, 2**32 - 1, 3, 4),
    (MAX_SEED, 2**63 - 3, 2, 5),
]


def _words(words: list[str]) -> tuple[int, ...]:
    return tuple(int(w, 16) for w in words)


def _decimal(value: np.float32) -> str:
    """The shortest decimal that reads back as this float32 (for people; bits are the truth)."""
    return np.format_float_positional(value, unique=True)


def build_vectors() -> dict:
    """The vectors file's content, computed by this implementation."""
    rows = []
    for seed, offset, n, dim in CASES:
        values = normal_rows(seed, offset, n, dim)
        rows.append(
            {
                "seed": str(seed),
                "offset": str(offset),
                "n": n,
                "dim": dim,
                "float32_bits": [[f"{b:08x}" for b in row] for row in values.view(np.uint32)],
                "values": [[_decimal(v) for v in row] for row in values],
            }
        )
    return {
        "format": "vaeserve-seed-vectors/1",
        "contract": (
            "Row i, column block j (columns 4j..4j+3) of seed s: Philox4x32-10 with key "
            "(s & 0xFFFFFFFF, s >> 32) and counter (i & 0xFFFFFFFF, i >> 32, j, 0) gives words "
            "x0..x3; u(x) = (x + 0.5) * 2**-32 in float64; r = sqrt(-2 * log(u(x0))), "
            "t = 6.283185307179586 * u(x1); columns 4j, 4j+1 = r*cos(t), r*sin(t); x2, x3 give "
            "4j+2, 4j+3 the same way; columns past dim are dropped; each value is rounded to "
            "float32 (nearest, ties to even). A latent is float32(value) * float32(temperature). "
            'See docs/service.md, "Seeds".'
        ),
        "tolerance": (
            "bit-exact where log, cos and sin are correctly rounded; a libm that is not may "
            "differ by 1 float32 ulp (rarely, about one value in 2**28)"
        ),
        "philox4x32_10": [{"counter": c, "key": k, "output": o} for c, k, o in KAT],
        "rows": rows,
    }


def write_vectors() -> None:
    """Rewrite the committed vectors from this implementation (a deliberate contract change)."""
    text = json.dumps(build_vectors(), indent=1)
    one_line = re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s*\]", lambda m: f"[{' '.join(m[1].split())}]", text)
    VECTORS.write_text(one_line + "\n")


@pytest.mark.parametrize(("counter", "key", "output"), KAT)
def test_philox_known_answers(counter, key, output):
    got = philox4x32_10(tuple(np.uint64(w) for w in _words(counter)), _words(key))
    assert tuple(int(w) for w in got) == _words(output)


def test_philox_vectorised_matches_one_at_a_time():
    counters = [_words(c) for c, _, _ in KAT]
    columns = tuple(np.array(col, dtype=np.uint64) for col in zip(*counters, strict=True))
    got = philox4x32_10(columns, (0xA4093822, 0x299F31D0))
    for i, counter in enumerate(counters):
        one = philox4x32_10(tuple(np.uint64(w) for w in counter), (0xA4093822, 0x299F31D0))
        assert [int(w[i]) for w in got] == [int(w) for w in one]


def test_committed_vectors_are_this_implementation():
    """Bit for bit, so any change to the stream shows up here and in the vectors' diff."""
    assert json.loads(VECTORS.read_text()) == build_vectors()


def test_vectors_do_not_hinge_on_the_last_bit_of_a_libm():
    """No vector's float64 value is within 16 float64 ulps of a float32 rounding boundary, so a
    libm one ulp off (numpy's SIMD log, glibc, V8) still rounds every vector the same way."""
    for seed, offset, n, dim in CASES:
        x = rows_float64(seed, offset, n, dim)
        f = x.astype(np.float32)
        below = np.nextafter(f, np.float32(-np.inf)).astype(np.float64)
        above = np.nextafter(f, np.float32(np.inf)).astype(np.float64)
        fd = f.astype(np.float64)
        margin = np.minimum(np.abs(x - (fd + below) / 2), np.abs(x - (fd + above) / 2))
        assert (margin > 16 * np.spacing(np.abs(x))).all(), (seed, offset, n, dim)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js (node) is not on PATH")
def test_node_reproduces_the_vectors():
    done = subprocess.run(
        ["node", str(NODE_CHECK), str(VECTORS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "values" in done.stdout


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, MAX_SEED),
    start=st.integers(0, 2**63),
    cuts=st.lists(st.integers(0, 700), min_size=1, max_size=5),
    dim=st.integers(1, 9),
)
def test_any_chunking_gives_the_same_rows(seed, start, cuts, dim):
    total = 700
    whole = normal_rows(seed, start, total, dim)
    bounds = sorted({0, total, *cuts})
    parts = [normal_rows(seed, start + a, b - a, dim) for a, b in itertools.pairwise(bounds)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_chunked_passes_match_one_pass():
    """normal_rows works in cache-sized passes; a long request must not depend on them."""
    n, dim = 300, 512
    one_pass = rows_float64(7, 5, n, dim).astype(np.float32)
    np.testing.assert_array_equal(normal_rows(7, 5, n, dim), one_pass)


def test_a_rows_first_columns_do_not_depend_on_the_latent_size():
    wide = normal_rows(3, 10, 4, 16)
    for dim in (1, 2, 3, 5, 8):
        np.testing.assert_array_equal(normal_rows(3, 10, 4, dim), wide[:, :dim])


def test_seeds_and_rows_differ():
    rows = normal_rows(0, 0, 2, 2)
    assert rows.dtype == np.float32 and rows.shape == (2, 2)
    assert not np.array_equal(normal_rows(1, 0, 2, 2), rows)
    assert not np.array_equal(rows[0], rows[1])
    assert not np.array_equal(normal_rows(2**32, 0, 2, 2), rows)  # the seed's high word counts


def test_standard_normal_moments():
    x = normal_rows(2024, 0, 50_000, 4).astype(np.float64)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert abs((x**4).mean() - 3) < 0.1  # a normal's kurtosis, not a uniform's
    assert abs(np.corrcoef(x[:, 0], x[:, 1])[0, 1]) < 0.02  # cos and sin of one angle


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        normal_rows(-1, 0, 1, 2)
    with pytest.raises(ValueError, match="seed"):
        normal_rows(MAX_SEED + 1, 0, 1, 2)
    with pytest.raises(ValueError, match="offset"):
        normal_rows(0, -1, 1, 2)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        normal_rows(0, 2**64 - 1, 2, 2)
    assert normal_rows(0, 0, 0, 2).shape == (0, 2)
    assert normal_rows(0, 2**64 - 1, 1, 2).shape == (1, 2)
