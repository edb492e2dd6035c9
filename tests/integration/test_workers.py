"""`vaeserve serve --workers 2` as a real process tree on loopback: one port, connections spread
over both workers, one readiness state, one aggregated /metrics (totals equal the requests sent,
`vaeserve_workers` 2), SIGHUP reaching every worker, SIGTERM draining in-flight requests and
exiting 0, and a killed worker stopping the rest with exit status 1 (fail fast)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vaeserve.service.config import Settings, available_cpus
from vaeserve.service.grpc.server import server_options
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import SERVE_CODE, serve_process
from .reliability import copy_version, metric_sum, wait_for
from .test_service_rpcs import scrape

READY = health_pb2.HealthCheckRequest(service="vaeserve.v1.VaeService")
LIVE = health_pb2.HealthCheckRequest(service="")
# Each worker's own metrics port, as it logs it (the test's view of which worker served).
WORKER_METRICS = re.compile(
    r"worker=(\d+) vaeserve\.service\.workers: metrics for the supervisor on 127\.0\.0\.1:(\d+)"
)
CHANNELS = 16


def fresh_channel(target: str) -> grpc.Channel:
    """A channel with its own connection (no subchannel shared with other channels of this
    process), so the kernel picks a worker for it anew."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def health_status(target: str, request: health_pb2.HealthCheckRequest = READY) -> str:
    with fresh_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
        except grpc.RpcError as exc:  # a worker that stopped listening
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def worker_ports(log: Path) -> dict[int, int]:
    return {int(k): int(port) for k, port in WORKER_METRICS.findall(log.read_text())}


def served(metrics: dict[str, float]) -> float:
    return metric_sum(metrics, "vaeserve_requests_total", 'code="OK"')


@pytest.mark.slow
def test_two_workers_share_one_port_health_metrics_reload_and_drain(tiny_repository, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(tiny_repository, root)
    # Every batch waits the full 0.8 s, so requests are still in flight when SIGTERM comes.
    flags = ("--workers", "2", "--max-delay-ms", "800", "--batch-wait-when-idle")
    with serve_process(root, tmp_path, *flags) as srv:
        metrics_url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
        for _ in range(4):  # port file written: every worker is ready, whichever answers
            assert health_status(srv.target) == "SERVING"
            assert health_status(srv.target, LIVE) == "SERVING"

        # Decode and Sample from many fresh connections, all at once.
        z = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
        channels = [fresh_channel(srv.target) for _ in range(CHANNELS)]
        stubs = [vae_pb2_grpc.VaeServiceStub(ch) for ch in channels]
        decodes = [
            s.Decode.future(pb.DecodeRequest(latents=to_tensor(z)), timeout=30) for s in stubs
        ]
        samples = [s.Sample.future(pb.SampleRequest(n=2), timeout=30) for s in stubs]
        for future in [*decodes, *samples]:
            assert to_array(future.result().images, "images").shape == (2, 1, 12, 12)
        for channel in channels:
            channel.close()

        total = scrape(metrics_url)
        assert total['vaeserve_requests_total{code="OK",method="Decode"}'] == CHANNELS
        assert total['vaeserve_requests_total{code="OK",method="Sample"}'] == CHANNELS
        assert total['vaeserve_request_latency_seconds_count{method="Decode"}'] == CHANNELS
        assert total["vaeserve_workers"] == 2 and total["vaeserve_ready"] == 1
        ports = worker_ports(srv.log)
        per_worker = {k: served(scrape(f"http://127.0.0.1:{p}/metrics")) for k, p in ports.items()}
        assert sorted(per_worker) == [0, 1]
        assert all(n > 0 for n in per_worker.values()), per_worker  # both workers served
        assert sum(per_worker.values()) == served(total) == 2 * CHANNELS

        # SIGHUP reaches every worker: the new version answers on every connection.
        copy_version(root / "tiny" / "1", root, "tiny", 2)
        srv.process.send_signal(signal.SIGHUP)
        reloaded = re.compile(r"worker=(\d) vaeserve\.service\.reload: reload \(SIGHUP\): ok")
        wait_for(lambda: len(set(reloaded.findall(srv.log.read_text()))) == 2, 60, "reloads")
        channels = [fresh_channel(srv.target) for _ in range(8)]
        stubs = [vae_pb2_grpc.VaeServiceStub(ch) for ch in channels]
        replies = [s.Sample.future(pb.SampleRequest(n=1), timeout=30) for s in stubs]
        assert {future.result().version for future in replies} == {2}
        for channel in channels:
            channel.close()

        # SIGTERM: in-flight requests on both workers finish, readiness goes NOT_SERVING, exit 0.
        channels = [fresh_channel(srv.target) for _ in range(6)]
        stubs = [vae_pb2_grpc.VaeServiceStub(ch) for ch in channels]
        pending = [
            s.Sample.future(pb.SampleRequest(n=i + 1), timeout=30) for i, s in enumerate(stubs)
        ]
        wait_for(lambda: scrape(metrics_url)["vaeserve_in_flight_requests"] == 6, 10, "in flight")
        srv.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert {health_status(srv.target) for _ in range(4)} <= {"NOT_SERVING", "UNAVAILABLE"}
        for i, future in enumerate(pending):
            assert to_array(future.result().images, "images").shape == (i + 1, 1, 12, 12)
        for channel in channels:
            channel.close()
        assert srv.process.wait(30) == 0
    log = srv.log.read_text()
    for k in (0, 1):
        assert f"worker={k} vaeserve.service.grpc.server: draining" in log
        assert f"worker {k} exited (exit status 0)" in log
    assert "all workers stopped; exit status 0" in log and "Traceback" not in log


@pytest.mark.slow
def test_a_killed_worker_stops_the_others_and_exits_1(tiny_repository, tmp_path):
    with serve_process(tiny_repository, tmp_path, "--workers", "2") as srv:
        pids = dict(re.findall(r"started worker (\d+) \(pid (\d+)\)", srv.log.read_text()))
        os.kill(int(pids["0"]), signal.SIGKILL)
        assert srv.process.wait(30) == 1
    log = srv.log.read_text()
    assert f"worker 0 (pid {pids['0']}) died unexpectedly (killed by SIGKILL)" in log
    assert "worker=1 vaeserve.service.grpc.server: draining" in log
    assert "worker 1 exited (exit status 0)" in log


def serve_once(*flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", SERVE_CODE, "serve", "--host", "127.0.0.1", "--providers", "cpu",
           "--metrics-port", "0", "--workers", "2", *flags]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
def test_a_worker_that_cannot_start_is_one_line_and_exit_1(tmp_path):
    (tmp_path / "empty").mkdir()
    result = serve_once("--port", "0", "--repository", str(tmp_path / "empty"))
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("vaeserve serve: error: worker ") and "Traceback" not in result.stderr


def test_a_port_in_use_is_refused_before_any_worker_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = serve_once("--port", str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1:" in result.stderr and "started worker" not in result.stderr


def test_threads_divide_among_workers_unless_set():
    cpus = available_cpus()
    assert Settings(workers=1).resolved_threads() == cpus
    assert Settings(workers=2).resolved_threads() == max(1, cpus // 2)
    assert Settings(workers=64).resolved_threads() == max(1, cpus // 64)
    assert Settings(workers=4, threads=3).resolved_threads() == 3
    for bad in (0, 65):
        with pytest.raises(ValueError, match="workers"):
            Settings(workers=bad)


def test_only_workers_share_the_port():
    def reuseport(settings: Settings) -> int:
        return dict(server_options(settings))["grpc.so_reuseport"]

    assert reuseport(Settings()) == 0
    assert reuseport(Settings(workers=2)) == 1
