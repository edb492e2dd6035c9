"""Hostile load against a real `vaeserve serve` process, measured from /proc and from the
callers: streams that are never read, unauthenticated 30 MiB bodies, SIGTERM under 32 clients,
and a short version of `make chaos`'s flood. Each failed on the code before round two of
docs/reliability.md; the full-size figures come from `make chaos` (benchmarks/chaos.py)."""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections import Counter

import grpc
import pytest

from vaeserve.service.client import VaeClient
from vaeserve.service.repository import bundled_repository
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import serve_process
from .reliability import proc_status_mib

pytestmark = pytest.mark.slow

BIG = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def open_unread(target: str, count: int, request: pb.SampleRequest) -> list:
    opened = []
    for _ in range(count):
        channel = grpc.insecure_channel(target, options=BIG)
        opened.append((channel, vae_pb2_grpc.VaeServiceStub(channel).SampleStream(request)))
    return opened


def close(opened: list) -> None:
    for channel, call in opened:
        call.cancel()
        channel.close()


def settle(pid: int, seconds: float = 30.0) -> float:
    """VmRSS once it stops growing (the streams' windows are full)."""
    last, deadline = 0.0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = proc_status_mib(pid)
        if abs(now - last) < 0.5:
            return now
        last = now
    return last


def test_an_open_unread_stream_costs_o1_memory_in_n_and_chunk_size(tiny_repository, tmp_path):
    """20 SampleStream(n=1,000,000, chunk_size=1), opened and never read: the server's RSS grows
    by at most 1 MiB per stream (before: 25-30 MiB each, the chunk positions as a list)."""
    with serve_process(tiny_repository, tmp_path) as srv:
        time.sleep(1.0)
        before = proc_status_mib(srv.process.pid)
        request = pb.SampleRequest(n=1_000_000, seed=3, chunk_size=1)
        opened = open_unread(srv.target, 20, request)
        after = settle(srv.process.pid)
        close(opened)
    per_stream = (after - before) / 20
    print(f"RSS {before:.1f} -> {after:.1f} MiB with 20 unread streams: {per_stream:.2f} each")
    assert per_stream <= 1.0


def test_unauthenticated_30_mib_bodies_are_refused_unread(tiny_repository, tmp_path):
    """8 clients each send 3 bodies of 30 MiB without a token: every one UNAUTHENTICATED, and
    the server's peak RSS grows by far less than the 720 MiB sent (before: +930 MiB, each body
    received and parsed before the token was looked at). Alone it grows by what the 8
    connections' flow-control windows take in before the refusal arrives (+26 to +66 MiB
    measured); beside other tests on 2 cores the refusals come later and the windows take in
    more (+155 and +222 MiB seen). So the bound here is 400 MiB, which catches bodies being read;
    the memory target itself (128 MiB) is a benchmark: `make chaos` judges it."""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with serve_process(tiny_repository, tmp_path, "--auth-token-file", str(token)) as srv:
        time.sleep(1.0)
        before = proc_status_mib(srv.process.pid)
        body = pb.SampleRequest(n=1, model="x" * (30 << 20))
        codes: Counter[str] = Counter()

        def send() -> None:
            with grpc.insecure_channel(srv.target, options=BIG) as channel:
                stub = vae_pb2_grpc.VaeServiceStub(channel)
                for _ in range(3):
                    try:
                        stub.Sample(body, timeout=60)
                        codes["OK"] += 1
                    except grpc.RpcError as exc:
                        codes[exc.code().name] += 1

        threads = [threading.Thread(target=send) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        peak = proc_status_mib(srv.process.pid, "VmHWM")
    print(f"{dict(codes)}; peak RSS {before:.0f} -> {peak:.0f} MiB")
    assert codes == Counter(UNAUTHENTICATED=24)
    assert peak - before < 400


def sigterm_outcomes(repository, workdir, use_client: bool) -> Counter[str]:
    """Final codes of 32 threads that call Sample(n=1) in a loop until their first error, with
    SIGTERM 2 s in: raw stubs, or VaeClient (which retries what is retryable)."""
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    with serve_process(repository, workdir, "--drain-grace-s", "15") as srv:

        def run(call) -> None:
            for i in range(100_000):  # bounded; ends at the first error
                try:
                    call(i)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                with lock:
                    codes[code] += 1
                if code != "OK":
                    return

        def loop() -> None:
            if use_client:
                with VaeClient(srv.target, timeout=20, retries=3, backoff_s=0.05) as client:
                    run(lambda i: client.sample(1, seed=i))
            else:
                with grpc.insecure_channel(srv.target) as channel:
                    stub = vae_pb2_grpc.VaeServiceStub(channel)
                    run(lambda i: stub.Sample(pb.SampleRequest(n=1, seed=i), timeout=20))

        threads = [threading.Thread(target=loop) for _ in range(32)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0
        for thread in threads:
            thread.join(60)
    return codes


def test_sigterm_under_32_clients_never_hands_a_caller_cancelled(tiny_repository, tmp_path):
    """32 clients call Sample(n=1) in a loop while the server gets SIGTERM. gRPC core cancels
    the calls that reach the server in the instant it stops (measured with raw stubs); VaeClient
    retries those like UNAVAILABLE, so no caller ever sees CANCELLED: each ends with OK, or
    with UNAVAILABLE or (rarely, once in four CI runs: its retries, the channel's and its own,
    outlast the 20 s deadline against the stopping server) DEADLINE_EXCEEDED, both meaning no
    replica was left to retry on."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "client").mkdir()
    raw = sigterm_outcomes(tiny_repository, tmp_path / "raw", use_client=False)
    client = sigterm_outcomes(tiny_repository, tmp_path / "client", use_client=True)
    print(f"raw stubs: {dict(raw)}; VaeClient: {dict(client)}")
    assert client["OK"] > 100 and raw["OK"] > 100
    assert "CANCELLED" not in client  # raw stubs: their CANCELLED count is printed
    assert set(client) <= {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}


def test_a_normal_caller_is_served_through_a_flood_of_unread_streams_and_big_samples(tmp_path):
    """The bundled MNIST model, 40 never-read max-n SampleStreams and 8 clients looping
    Sample(n=1024): a caller's Sample(n=4) is never starved (before fair queueing it waited
    5-10 s behind every queued chunk; the bound here is 1 s, ten times the target, so a loaded
    machine cannot fail it) and RSS grows under 150 MiB. The latency target itself (p99 under
    100 ms) is a benchmark: `make chaos` judges it, at 200 streams and 64 samplers."""
    with serve_process(bundled_repository(), tmp_path) as srv:
        pid = srv.process.pid
        probe_channel = grpc.insecure_channel(srv.target)
        probe = vae_pb2_grpc.VaeServiceStub(probe_channel)
        for i in range(20):  # warm
            probe.Sample(pb.SampleRequest(n=4, seed=i), timeout=10)
        before = proc_status_mib(pid)
        opened = open_unread(srv.target, 40, pb.SampleRequest(n=1_000_000, seed=7))
        stop = threading.Event()
        big: Counter[str] = Counter()

        def sampler(i: int) -> None:
            with grpc.insecure_channel(srv.target, options=BIG) as channel:
                stub = vae_pb2_grpc.VaeServiceStub(channel)
                while not stop.is_set():
                    try:
                        stub.Sample(pb.SampleRequest(n=1024, seed=i), timeout=60)
                        big["OK"] += 1
                    except grpc.RpcError as exc:
                        big[exc.code().name] += 1

        threads = [threading.Thread(target=sampler, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        latencies, peak = [], before
        started = time.monotonic()
        while time.monotonic() - started < 10.0:
            t0 = time.perf_counter()
            probe.Sample(pb.SampleRequest(n=4, seed=1), timeout=30)
            latencies.append(time.perf_counter() - t0)
            peak = max(peak, proc_status_mib(pid))
            time.sleep(0.02)
        stop.set()
        for thread in threads:
            thread.join(60)
        close(opened)
        probe_channel.close()
    ms = sorted(1000 * x for x in latencies)
    p99 = ms[int(0.99 * (len(ms) - 1))]
    print(
        f"probe: {len(ms)} calls, p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms; "
        f"Sample(n=1024) {dict(big)}; RSS {before:.0f} -> peak {peak:.0f} MiB"
    )
    assert p99 < 1000
    assert peak - before < 150
    assert big["OK"] >= 8 and set(big) == {"OK"}
