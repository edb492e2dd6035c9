"""A bounded soak: steady mixed load (Sample, SampleStream, Encode, Decode) from a few client
threads against a real `vaeserve serve` process. No error and every answer byte-exact, resident
memory after the warm-up stays within RSS_BOUND_MIB, and latency does not drift: the p99 of the
last third is at most twice the p99 of the first third plus a small slack.

90 s of load by default (CI); VAESERVE_SOAK_S=1800 soaks for half an hour locally."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import grpc
import numpy as np
import pytest

from vaeserve.v1 import vae_pb2_grpc

from .conftest import serve_process
from .reliability import answer, metric_sum, mixed_requests, proc_status_mib
from .test_service_rpcs import scrape

pytestmark = pytest.mark.slow

SOAK_S = float(os.environ.get("VAESERVE_SOAK_S", "90"))
WARMUP_S = min(15.0, SOAK_S / 6)
CLIENTS = 4
THINK_S = 0.005  # a pause between a client's calls: steady load, not a flood
RSS_BOUND_MIB = 16.0  # growth of VmRSS from the end of the warm-up to the end of the soak
LATENCY_SLACK_S = 0.1


def test_soak_mixed_load(tiny_repository, tmp_path):
    with serve_process(tiny_repository, tmp_path, "--max-delay-ms", "2") as srv:
        work = mixed_requests()
        with grpc.insecure_channel(srv.target) as channel:
            stub = vae_pb2_grpc.VaeServiceStub(channel)
            expected = [answer(stub, method, request) for method, request in work]

        started = time.monotonic()
        end = started + SOAK_S
        records: list[tuple[float, str, float]] = []  # (start, method, latency)
        failures: Counter[str] = Counter()
        lock = threading.Lock()

        def client(worker: int) -> None:
            with grpc.insecure_channel(srv.target) as ch:
                stub = vae_pb2_grpc.VaeServiceStub(ch)
                i = worker
                while time.monotonic() < end:  # bounded by time (and each call by its deadline)
                    method, request = work[i % len(work)]
                    t0 = time.monotonic()
                    try:
                        ok = answer(stub, method, request) == expected[i % len(work)]
                        outcome = None if ok else f"{method}: wrong answer"
                    except grpc.RpcError as err:
                        outcome = f"{method}: {err.code().name}: {err.details()}"
                    latency = time.monotonic() - t0
                    with lock:
                        records.append((t0, method, latency))
                        if outcome:
                            failures[outcome] += 1
                    i += 1
                    time.sleep(THINK_S)

        threads = [threading.Thread(target=client, args=(w,)) for w in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(WARMUP_S)
        rss = [proc_status_mib(srv.process.pid)]  # after the warm-up
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            rss.append(proc_status_mib(srv.process.pid))
        for thread in threads:
            thread.join(120)
        metrics = scrape(f"http://127.0.0.1:{srv.metrics_port}/metrics")
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0

    measured = sorted(r for r in records if r[0] >= started + WARMUP_S)
    third = (SOAK_S - WARMUP_S) / 3
    first = [lat for t, _, lat in measured if t < started + WARMUP_S + third]
    last = [lat for t, _, lat in measured if t >= started + WARMUP_S + 2 * third]
    p50 = [float(np.percentile(x, 50)) for x in (first, last)]
    p99 = [float(np.percentile(x, 99)) for x in (first, last)]
    served = metric_sum(metrics, "vaeserve_requests_total")
    refused = served - metric_sum(metrics, "vaeserve_requests_total", 'code="OK"')
    print(
        f"soak {SOAK_S:.0f}s: {len(records)} calls ({len(records) / SOAK_S:.0f}/s) "
        f"{dict(Counter(m for _, m, _ in records))}; failures {dict(failures)}; "
        f"VmRSS after warm-up {rss[0]:.1f} MiB, end {rss[-1]:.1f}, max {max(rss):.1f} "
        f"(samples {[round(r, 1) for r in rss]}); latency p50 first/last third "
        f"{p50[0] * 1e3:.1f}/{p50[1] * 1e3:.1f} ms, p99 {p99[0] * 1e3:.1f}/{p99[1] * 1e3:.1f} ms"
    )
    assert not failures
    assert served == len(records) + len(work) and refused == 0  # the server saw them all OK
    assert len(records) > 20 * SOAK_S  # it was load: at least 20 calls a second
    assert rss[-1] - rss[0] < RSS_BOUND_MIB and max(rss) - rss[0] < RSS_BOUND_MIB
    assert p99[1] <= 2 * p99[0] + LATENCY_SLACK_S
