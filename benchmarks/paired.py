"""Paired measurements for the ratio targets: the two sides of each ratio taken in alternation.

On a shared 2-core virtual machine the speed of the cores drifts by 15-30% over minutes, and the
harness's tables take the limit (in-process) and the service minutes apart, so a ratio of two
table entries mixes the drift into the comparison. Here each round measures one side and then
the other within a few seconds, and the ratio reported is the median over rounds of the
per-round ratios: drift that is slow next to a round cancels out.
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

import numpy as np

from benchmarks.inprocess import session as open_session
from benchmarks.scenarios import loadgen
from benchmarks.server import start_server
from benchmarks.timing import images_per_second
from vaeserve.service.repository import ModelSpec

log = logging.getLogger(__name__)


def service_fraction(
    target: str,
    spec: ModelSpec,
    threads: int,
    providers: list[str] | None,
    *,
    batch: int = 256,
    rounds: int = 5,
    seconds: float = 2.0,
) -> dict[str, Any]:
    """Per graph: service images/s over in-process ORT images/s (same session options), one
    round after the other."""
    rng = np.random.default_rng(0)
    inputs = {
        "encoder": rng.random((batch, *spec.image_shape), dtype=np.float32),
        "decoder": rng.standard_normal((batch, spec.latent_dim)).astype(np.float32),
    }
    out: dict[str, Any] = {}
    for method, graph in (("encode", "encoder"), ("decode", "decoder")):
        session = open_session(spec, graph, threads, providers)
        x = inputs[graph]
        rows = []
        for _ in range(rounds):
            limit = images_per_second(
                lambda s=session, x=x: s.run(x), batch, min_seconds=seconds / 3
            )
            service = loadgen(target, method, batch, 1, seconds)["images_per_s"]
            rows.append({"in_process": limit, "service": service, "ratio": service / limit})
        ratio = statistics.median(r["ratio"] for r in rows)
        log.info(
            "paired %s batch %d: service / in-process per round %s, median %.0f%%",
            method,
            batch,
            [f"{r['ratio']:.0%}" for r in rows],
            100 * ratio,
        )
        out[method] = {"batch": batch, "rounds": rows, "median_ratio": ratio}
    return out


def batching_gain(clients: int = 64, rounds: int = 4, seconds: float = 2.0) -> dict[str, Any]:
    """Batch-1 Decode from `clients` callers against two servers, batching on and off
    (--max-batch-size 1), alternating; the gain and batching-on p99 as medians over rounds."""
    on, off = start_server(), start_server("--max-batch-size", "1")
    try:
        rows = []
        for _ in range(rounds):
            a = loadgen(on.target, "decode", 1, clients, seconds)
            b = loadgen(off.target, "decode", 1, clients, seconds)
            rows.append(
                {
                    "on_images_per_s": a["images_per_s"],
                    "off_images_per_s": b["images_per_s"],
                    "gain": a["images_per_s"] / b["images_per_s"],
                    "on_p99_ms": a["p99_ms"],
                    "off_p99_ms": b["p99_ms"],
                }
            )
    finally:
        on.stop()
        off.stop()
    result = {
        "clients": clients,
        "rounds": rows,
        "median_gain": statistics.median(r["gain"] for r in rows),
        "median_on_p99_ms": statistics.median(r["on_p99_ms"] for r in rows),
    }
    log.info(
        "paired batching gain at %d clients per round %s, median %.2fx, p99 on %.1f ms",
        clients,
        [f"{r['gain']:.2f}" for r in rows],
        result["median_gain"],
        result["median_on_p99_ms"],
    )
    return result
