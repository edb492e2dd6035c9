"""Start a real `vaeserve serve` process, time it to readiness, read its memory, stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

READINESS = "vaeserve.v1.VaeService"


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    target: str
    startup_s: float
    metrics_port: int = 0

    def metrics(self) -> dict[str, float]:
        """One scrape of /metrics: {series: value}."""
        from urllib.request import urlopen

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urlopen(url, timeout=10).read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                values[series] = float(value)
        return values

    def rss_mb(self) -> float:
        """Resident memory of the server process, from /proc (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def torch_loaded(self) -> bool:
        """Whether libtorch is mapped into the server (it must never be)."""
        maps = Path(f"/proc/{self.process.pid}/maps").read_text()
        return "libtorch" in maps

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


PROVIDERS = ["--providers", "cpu"]  # benchmarks.run --providers cuda,cpu changes this


def start_server(*args: str, timeout: float = 60.0) -> ServerProcess:
    """`vaeserve serve --port 0 ARGS` on loopback; returns once readiness is SERVING.

    start-up time runs from process creation to the first SERVING answer of the readiness check.
    """
    port_file = Path(tempfile.mkdtemp(prefix="vaeserve-bench-")) / "ports.json"
    cmd = [
        sys.executable,
        "-m",
        "vaeserve",
        "serve",
        "--log-level",
        "WARNING",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "-1",
        "--port-file",
        str(port_file),
        *PROVIDERS,
        *args,
    ]
    t0 = time.perf_counter()
    process = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = t0 + timeout
    while not port_file.exists():
        if process.poll() is not None or time.perf_counter() > deadline:
            raise RuntimeError(f"server did not start: {' '.join(cmd)}")
        time.sleep(0.005)
    ports = json.loads(port_file.read_text())
    target = f"127.0.0.1:{ports['port']}"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=READINESS), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.perf_counter() > deadline:
                process.kill()
                raise RuntimeError("server never became ready")
            time.sleep(0.005)
    return ServerProcess(process, target, time.perf_counter() - t0, ports["metrics_port"])
