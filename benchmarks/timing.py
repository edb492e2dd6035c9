"""Small timing helpers shared by the benchmark scenarios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def images_per_second(
    fn: Callable[[], object], batch: int, *, min_seconds: float = 0.6, repeats: int = 3
) -> float:
    """Median over `repeats` of images/s, each repeat running `fn` for at least `min_seconds`."""
    fn()  # warm-up: first runs allocate
    rates = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        rates.append(calls * batch / elapsed)
    return statistics.median(rates)


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds."""
    if not latencies_s:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    ordered = sorted(latencies_s)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0

    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99)}
