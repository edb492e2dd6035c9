"""Limits and client faults: a concurrency cap answered with UNAVAILABLE (retry soon), cancelled
requests and streams not computed (and counted), a slow stream reader stalling nobody, and memory
that stays bounded under a flood of oversize requests (VmRSS of a real server process).

The queue-depth limit and expired deadlines are in test_service_errors.py."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from vaeserve.service.grpc.tensors import to_tensor
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import running_server, serve_process
from .reliability import metric_sum, proc_status_mib, wait_for
from .test_service_rpcs import scrape

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
DECODER = 'graph="decoder"'


def test_concurrent_requests_over_the_limit_are_refused(tiny_repository):
    """Two requests wait in the batcher; the third gets UNAVAILABLE at once (overload: retrying
    soon helps); health is not counted and still answers; the two then complete."""
    with (
        running_server(
            tiny_repository,
            max_concurrent_requests=2,
            max_delay_ms=1500.0,
            batch_wait_when_idle=True,
        ) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        waiting = [stub.Sample.future(pb.SampleRequest(n=1, seed=i), timeout=30) for i in (1, 2)]
        wait_for(lambda: scrape(srv.metrics_url)["vaeserve_in_flight_requests"] == 2)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "max_concurrent_requests" in err.value.details()
        assert [f.result().images.shape for f in waiting] == [[1, 1, 12, 12]] * 2
        assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10).name == "tiny"


def test_a_cancelled_request_is_dropped_not_computed(tiny_repository):
    with (
        running_server(tiny_repository, max_delay_ms=1500.0, batch_wait_when_idle=True) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        future = stub.Sample.future(pb.SampleRequest(n=3, seed=1), timeout=30)
        depth = "vaeserve_queue_depth"
        wait_for(lambda: metric_sum(scrape(srv.metrics_url), depth, DECODER) == 1)
        future.cancel()
        dropped = "vaeserve_dropped_total"
        wait_for(lambda: metric_sum(scrape(srv.metrics_url), dropped, 'reason="cancelled"') == 1)
        metrics = scrape(srv.metrics_url)
        assert metric_sum(metrics, "vaeserve_batch_size_count", DECODER) == 0
        wait_for(
            lambda: (
                scrape(srv.metrics_url).get(
                    'vaeserve_requests_total{code="CANCELLED",method="Sample"}'
                )
                == 1
            )
        )
        # The server goes on: a new request is computed, and only it.
        assert stub.Sample(pb.SampleRequest(n=2, seed=1), timeout=30).images.shape[0] == 2
        metrics = scrape(srv.metrics_url)
        assert metric_sum(metrics, "vaeserve_batch_size_sum", DECODER) == 2


def test_a_cancelled_stream_stops_computing(tiny_repository):
    """A stream of 5000 one-image chunks, cancelled after 3: the rest is never decoded."""
    with (
        running_server(tiny_repository, providers="cpu") as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        stream = stub.SampleStream(pb.SampleRequest(n=5000, seed=3, chunk_size=1), timeout=60)
        for _ in range(3):
            next(stream)
        stream.cancel()
        key = 'vaeserve_requests_total{code="CANCELLED",method="SampleStream"}'
        wait_for(lambda: scrape(srv.metrics_url).get(key) == 1)
        time.sleep(0.3)
        runs = metric_sum(scrape(srv.metrics_url), "vaeserve_batch_size_count", DECODER)
        assert runs < 100, runs  # a handful of chunks ahead at most, not 5000
        time.sleep(0.3)
        again = metric_sum(scrape(srv.metrics_url), "vaeserve_batch_size_count", DECODER)
        assert again == runs  # and nothing more after the cancel


def test_a_slow_stream_reader_stalls_no_one(tiny_repository):
    """A client reads one chunk of a 100,000-image stream and stops reading: flow control
    holds that one stream, other callers are answered meanwhile, and the server does not
    compute ahead of the reader."""
    with (
        running_server(tiny_repository, providers="cpu", max_stream_n=100_000) as srv,
        grpc.insecure_channel(srv.target) as slow_channel,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stream = vae_pb2_grpc.VaeServiceStub(slow_channel).SampleStream(
            pb.SampleRequest(n=100_000, seed=5), timeout=120
        )
        first = next(stream)
        assert first.offset == 0
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        for i in range(30):  # each well inside its deadline while the reader sleeps
            reply = stub.Sample(pb.SampleRequest(n=8, seed=i), timeout=10)
            assert reply.images.shape == [8, 1, 12, 12]
            stub.Decode(
                pb.DecodeRequest(latents=to_tensor(np.zeros((4, 3), np.float32))), timeout=10
            )
        metrics = scrape(srv.metrics_url)
        assert metrics["vaeserve_in_flight_requests"] >= 1  # the stream is still open
        decoded = metric_sum(metrics, "vaeserve_batch_size_sum", DECODER) - 30 * 8 - 30 * 4
        assert decoded < 50_000, decoded  # held back by the reader, not all 100,000
        second = next(stream)  # and the stream carries on where it was
        assert second.offset == len(first.latents.data) // 12
        stream.cancel()


@pytest.mark.slow
def test_memory_stays_bounded_under_a_flood_of_oversize_requests(tiny_repository, tmp_path):
    """8 clients send oversize requests of every kind to a real server process: 4 MB messages
    (over max_message_bytes), 0.9 MB Encode requests over max_images_per_request, and huge n.
    Every one gets RESOURCE_EXHAUSTED, and the resident memory after the flood stays within
    BOUND_MIB of what it was after a warm-up (several GB pass through in all)."""
    flags = ("--max-message-bytes", str(1 << 20), "--max-images-per-request", "100")
    with serve_process(tiny_repository, tmp_path, *flags) as srv:
        big = pb.EncodeRequest(images=to_tensor(np.zeros((1000, 1, 32, 32), np.float32)))
        over_count = pb.EncodeRequest(images=to_tensor(np.zeros((6000, 1, 12, 12), np.uint8)))
        requests = [
            ("Encode", big),
            ("Encode", over_count),
            ("Sample", pb.SampleRequest(n=10**9)),
            ("SampleStream", pb.SampleRequest(n=10**12)),
        ]
        codes: Counter[str] = Counter()
        lock = threading.Lock()

        def flood(rounds: int) -> None:
            with grpc.insecure_channel(srv.target) as channel:
                stub = vae_pb2_grpc.VaeServiceStub(channel)
                for i in range(rounds):
                    method, request = requests[i % len(requests)]
                    try:
                        reply = getattr(stub, method)(request, timeout=30)
                        if method == "SampleStream":
                            list(reply)
                        code = "OK"
                    except grpc.RpcError as err:
                        code = err.code().name
                    with lock:
                        codes[code] += 1

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(flood, [25] * 8))
        warm = proc_status_mib(srv.process.pid)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(flood, [400] * 8))
        after = proc_status_mib(srv.process.pid)
        peak = proc_status_mib(srv.process.pid, "VmHWM")
        print(
            f"flood: {sum(codes.values())} requests in {time.monotonic() - started:.1f}s, "
            f"{dict(codes)}; VmRSS warm {warm:.1f} MiB, after {after:.1f} MiB, "
            f"peak {peak:.1f} MiB"
        )
        assert codes == Counter({"RESOURCE_EXHAUSTED": 8 * 425})
        assert after - warm < BOUND_MIB, (warm, after)
        with grpc.insecure_channel(srv.target) as channel:  # and it still serves
            reply = vae_pb2_grpc.VaeServiceStub(channel).Sample(pb.SampleRequest(n=2), timeout=10)
            assert reply.images.shape == [2, 1, 12, 12]


BOUND_MIB = 48
