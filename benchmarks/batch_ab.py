"""Paired A/B of two `max_batch_size` values on the service: Decode and Encode at batch 256 from
one client, and batch-1 Decode from 64 clients, alternating servers round by round (the VM's speed
drifts). `python -m benchmarks.batch_ab [A B]`; docs/performance-analysis.md quotes it."""

from __future__ import annotations

import statistics
import sys

from benchmarks.scenarios import loadgen
from benchmarks.server import start_server


def main(argv: list[str]) -> int:
    sizes = argv or ["64", "256"]
    servers = {size: start_server("--max-batch-size", size) for size in sizes}
    rows: dict[str, dict[str, list[float]]] = {s: {"dec": [], "enc": [], "c64": []} for s in sizes}
    try:
        for r in range(4):
            for size, srv in servers.items():
                got = rows[size]
                got["dec"].append(loadgen(srv.target, "decode", 256, 1, 2.0)["images_per_s"])
                got["enc"].append(loadgen(srv.target, "encode", 256, 1, 2.0)["images_per_s"])
                got["c64"].append(loadgen(srv.target, "decode", 1, 64, 2.0)["images_per_s"])
                print(r, size, {k: round(v[-1]) for k, v in got.items()}, flush=True)
    finally:
        for srv in servers.values():
            srv.stop()
    a, b = sizes
    for key in ("dec", "enc", "c64"):
        ratios = [x / y for x, y in zip(rows[a][key], rows[b][key], strict=True)]
        print(
            f"{key}: {a} / {b} per round {[f'{x:.2f}' for x in ratios]}, median "
            f"{statistics.median(ratios):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
