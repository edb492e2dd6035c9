"""NVIDIA perf_analyzer against vaeserve's KServe V2 endpoint and the PyTriton peer, side by side.

The same decoder.onnx (the bundled model) behind both servers; perf_analyzer (gRPC, `-m decoder`,
batch 1) drives each at concurrency 1, 2, 4, ... 64, one level per run, the two servers
alternating at every level so drift of the shared machine hits both alike. vaeserve answers V2
name `decoder` as its default model's decoder and serves Triton's ModelConfig extension, which
perf_analyzer reads before it starts. Writes benchmarks/results/perf_analyzer.json and prints a
table (inferences/s and p50/p99 latency per level).

perf_analyzer is a C++ binary: pass `--perf-analyzer PATH`, or have it on PATH or in the peers'
venv (`.venv-peers/bin/perf_analyzer`). The PyPI project `perf-analyzer` must ship that binary;
its 0.1.0 release is an empty placeholder (a `hello()` function), and this script says so
instead of running.

    python -m benchmarks.peers.perf_analyzer [--quick] [--levels 1,2,4] [--interval-ms 1000]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.peers.run import (
    MODEL,
    ROOT,
    Peer,
    peers_libdir,
    start_kserve,
    start_vaeserve,
)
from vaeserve.service.repository import ModelRepository, bundled_repository

log = logging.getLogger("benchmarks.peers.perf_analyzer")

LEVELS = (1, 2, 4, 8, 16, 32, 64)
OUT = ROOT / "benchmarks" / "results" / "perf_analyzer.json"
PLACEHOLDER = (
    "perf_analyzer binary not found: PyPI's `perf-analyzer` 0.1.0 (the only release this "
    "registry serves) is an empty placeholder without the C++ binary. Install a release that "
    "ships it (or the Triton SDK image's /usr/local/bin/perf_analyzer) and pass --perf-analyzer"
)


def find_binary(given: str | None, peers_python: str) -> str:
    """The perf_analyzer executable, or SystemExit saying why there is none."""
    candidates = [given] if given else []
    candidates += [shutil.which("perf_analyzer"), str(Path(peers_python).parent / "perf_analyzer")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit(PLACEHOLDER)


def run_level(binary: str, target: str, level: int, interval_ms: int, workdir: Path) -> dict:
    """One perf_analyzer run at one concurrency; its CSV row as numbers (latencies in µs)."""
    report = workdir / f"pa-{target.replace(':', '-')}-{level}.csv"
    cmd = [
        binary,
        "-i",
        "grpc",
        "-u",
        target,
        "-m",
        MODEL,
        "-b",
        "1",
        "--concurrency-range",
        str(level),
        "--measurement-interval",
        str(interval_ms),
        "--stability-percentage",
        "50",
        "--max-trials",
        "4",
        "--percentile",
        "99",
        "-f",
        str(report),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"perf_analyzer failed on {target}:\n{(done.stderr or done.stdout)[-2000:]}"
        )
    with report.open() as f:
        row = next(csv.DictReader(f))
    return {
        "concurrency": level,
        "infer_per_s": float(row["Inferences/Second"]),
        "p50_us": float(row["p50 latency"]),
        "p99_us": float(row["p99 latency"]),
        "avg_us": float(row["Avg latency"]),
    }


def start_peers(peers_python: str) -> list[Peer]:
    spec = ModelRepository(bundled_repository()).scan().resolve()
    base = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    libdir = peers_libdir(peers_python).strip()
    ld = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)
    peers = [start_vaeserve("vaeserve")]
    try:
        peers.append(
            start_kserve(
                "PyTriton",
                peers_python,
                "benchmarks.peers.triton",
                spec.graph_path("decoder"),
                {**base, "LD_LIBRARY_PATH": ld},
            )
        )
    except BaseException:
        peers[0].stop()
        raise
    return peers


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    names = list(results)
    head = "| concurrency | " + " | ".join(f"{n} inf/s | {n} p50 ms | {n} p99 ms" for n in names)
    lines = [head + " |", "|" + " --- |" * (1 + 3 * len(names))]
    for i, level in enumerate(r["concurrency"] for r in results[names[0]]):
        cells = [str(level)]
        for n in names:
            r = results[n][i]
            cells += [
                f"{r['infer_per_s']:,.0f}",
                f"{r['p50_us'] / 1000:.2f}",
                f"{r['p99_us'] / 1000:.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--perf-analyzer", default=None, help="the perf_analyzer executable")
    parser.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrencies")
    parser.add_argument("--interval-ms", type=int, default=2000, help="per measurement window")
    parser.add_argument("--quick", action="store_true", help="500 ms windows (about a minute)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    binary = find_binary(args.perf_analyzer, args.peers_python)
    if not Path(args.peers_python).exists():
        raise SystemExit(f"{args.peers_python} is missing: the PyTriton peer runs from it")
    levels = [int(x) for x in args.levels.split(",")]
    interval = 500 if args.quick else args.interval_ms
    peers = start_peers(args.peers_python)
    results: dict[str, list[dict[str, Any]]] = {p.name: [] for p in peers}
    try:
        with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
            for k, level in enumerate(levels):
                for peer in peers if k % 2 == 0 else peers[::-1]:
                    row = run_level(binary, peer.target, level, interval, Path(tmp))
                    log.info("%s c=%d: %.0f inf/s", peer.name, level, row["infer_per_s"])
                    results[peer.name].append(row)
    finally:
        for peer in peers:
            peer.stop()
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": binary,
        "model": MODEL,
        "batch": 1,
        "interval_ms": interval,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(table(results))
    print(f"written {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
