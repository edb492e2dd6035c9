"""The service measured end to end over loopback gRPC, load from separate processes."""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from typing import Any

import grpc
import numpy as np

from benchmarks.server import ServerProcess, start_server
from vaeserve.service.grpc.tensors import to_tensor
from vaeserve.v1 import vae_pb2 as pb

log = logging.getLogger(__name__)


def loadgen(
    target: str, method: str, batch: int, concurrency: int, seconds: float, fmt: str = "float32"
) -> dict[str, Any]:
    """Run benchmarks.loadgen in a child process and return its JSON result."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--target",
        target,
        "--method",
        method,
        "--batch",
        str(batch),
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
        "--format",
        fmt,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def single_client(
    server: ServerProcess, batches: list[int], seconds: float
) -> dict[str, dict[int, dict[str, Any]]]:
    """(a) one client, back-to-back requests, per method and batch size."""
    result: dict[str, dict[int, dict[str, Any]]] = {}
    for method in ("encode", "decode", "sample"):
        result[method] = {}
        for n in batches:
            r = loadgen(server.target, method, n, 1, seconds)
            result[method][n] = r
            log.info(
                "service %-6s batch %5d: %9.0f img/s  p50 %7.2f ms  p99 %7.2f ms",
                method,
                n,
                r["images_per_s"],
                r["p50_ms"],
                r["p99_ms"],
            )
    return result


def concurrency_sweep(
    levels: list[int], seconds: float, server_args: tuple[str, ...]
) -> dict[int, dict[str, Any]]:
    """(b) batch-1 Decode from N concurrent callers against a fresh server."""
    server = start_server(*server_args)
    try:
        out = {}
        for c in levels:
            r = loadgen(server.target, "decode", 1, c, seconds)
            out[c] = r
            log.info(
                "concurrency %3d %s: %8.0f img/s  p50 %6.2f  p99 %6.2f ms  errors %d",
                c,
                " ".join(server_args) or "(defaults)",
                r["images_per_s"],
                r["p50_ms"],
                r["p99_ms"],
                r["errors"],
            )
        return out
    finally:
        server.stop()


def startup(repeats: int) -> dict[str, Any]:
    """Seconds from process start to readiness SERVING, and memory after warm-up."""
    times, rss, torch_seen = [], [], False
    for _ in range(repeats):
        server = start_server()
        times.append(server.startup_s)
        rss.append(server.rss_mb())
        torch_seen |= server.torch_loaded()
        server.stop()
    return {
        "startup_s": statistics.median(times),
        "startup_runs_s": times,
        "rss_after_warmup_mb": statistics.median(rss),
        "torch_loaded": torch_seen,
    }


def payload_bytes(target: str, n: int = 64) -> dict[str, float]:
    """Bytes per image on the wire (serialized response) for each output format."""
    with grpc.insecure_channel(target) as channel:
        from vaeserve.v1 import vae_pb2_grpc

        stub = vae_pb2_grpc.VaeServiceStub(channel)
        info = stub.GetModelInfo(pb.GetModelInfoRequest())
        z = np.random.default_rng(0).standard_normal((n, info.latent_dim)).astype(np.float32)
        out = {}
        for name, fmt in (
            ("float32", pb.IMAGE_FORMAT_FLOAT32),
            ("uint8", pb.IMAGE_FORMAT_UINT8),
            ("png", pb.IMAGE_FORMAT_PNG),
        ):
            reply = stub.Decode(pb.DecodeRequest(latents=to_tensor(z), format=fmt))
            out[name] = reply.ByteSize() / n
        return out
