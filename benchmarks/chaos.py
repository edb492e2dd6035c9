"""`make chaos`: hostile-load scenarios against a real `vaeserve serve` process, with figures.

Each scenario tries to break one promise of docs/reliability.md and prints what it measured:

- `flood`: unread max-n SampleStreams (each on its own connection, stock client settings) plus
  concurrent max-size Samples, while a normal caller sends Sample(n=4) every 20 ms. Promise: that
  caller's p99 stays under 100 ms and the server's RSS grows by less than 300 MiB.
- `unread-memory`: open, never-read SampleStream(n=1,000,000, chunk_size=1) calls. Promise: an
  open stream costs O(1) memory in n and chunk_size (at most 1 MiB of RSS each).
- `unauthenticated-bodies`: concurrent 30 MiB bodies without a token to a token-protected server.
  Promise: refused (UNAUTHENTICATED) before they are read or parsed; RSS grows by less than
  128 MiB (what the connections' flow-control windows take in), not by the bodies.

Results go to benchmarks/results/chaos.json; docs/reliability.md quotes them. The load generator
shares the machine's cores with the server, as it does in CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from benchmarks.server import ServerProcess, start_server
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

RESULTS = Path(__file__).parent / "results" / "chaos.json"
BIG = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def say(text: str) -> None:
    print(text, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def decoder_rows(server: ServerProcess) -> float:
    return sum(
        v
        for k, v in server.metrics().items()
        if k.startswith("vaeserve_batch_size_sum") and 'graph="decoder"' in k
    )


class Probe:
    """A normal caller: Sample(n=4) every `interval_s`, latencies recorded."""

    def __init__(self, target: str, interval_s: float = 0.02) -> None:
        self.target, self.interval_s = target, interval_s
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = vae_pb2_grpc.VaeServiceStub(channel)
            i = 0
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    stub.Sample(pb.SampleRequest(n=4, seed=i), timeout=30)
                    self.latencies.append(time.perf_counter() - started)
                except grpc.RpcError as exc:
                    self.errors[exc.code().name] += 1
                i += 1
                self._stop.wait(max(0.0, self.interval_s - (time.perf_counter() - started)))

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def summary(self) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies]
        return {
            "calls": len(ms),
            "errors": dict(self.errors),
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p99_ms": round(percentile(ms, 0.99), 1) if ms else None,
            "max_ms": round(max(ms), 1) if ms else None,
        }


def loop_threads(count: int, body: Callable[[int, threading.Event], None]) -> Any:
    """`count` threads running body(i, stop) until stop is set; returns (stop, threads)."""
    stop = threading.Event()
    threads = [threading.Thread(target=body, args=(i, stop), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return stop, threads


def open_unread_streams(target: str, count: int, request: pb.SampleRequest) -> list[Any]:
    """`count` SampleStream calls, each on its own connection, never read."""
    calls = []
    for i in range(count):
        channel = grpc.insecure_channel(target, options=BIG)
        call = vae_pb2_grpc.VaeServiceStub(channel).SampleStream(request)
        calls.append((channel, call))
        if i % 50 == 49:
            say(f"  {i + 1} streams open")
    return calls


def close_all(calls: list[Any]) -> None:
    for channel, call in calls:
        call.cancel()
        channel.close()


def flood(args: argparse.Namespace) -> dict[str, Any]:
    server = start_server("--log-level", "WARNING", *args.serve_args)
    try:
        with Probe(server.target) as quiet:
            time.sleep(args.baseline_s)
        baseline_rss = server.rss_mb()
        rows_before = decoder_rows(server)
        say(f"flood: baseline Sample(n=4) {quiet.summary()}, RSS {baseline_rss:.0f} MiB")
        max_n = pb.SampleRequest(n=1_000_000, seed=7)  # max_stream_n, default chunks
        streams = open_unread_streams(server.target, args.streams, max_n)
        samples: Counter[str] = Counter()

        def sampler(i: int, stop: threading.Event) -> None:
            with grpc.insecure_channel(server.target, options=BIG) as channel:
                stub = vae_pb2_grpc.VaeServiceStub(channel)
                while not stop.is_set():
                    try:
                        stub.Sample(pb.SampleRequest(n=1024, seed=i), timeout=120)
                        samples["OK"] += 1
                    except grpc.RpcError as exc:
                        samples[exc.code().name] += 1

        stop, threads = loop_threads(args.samples, sampler)
        peak, rss = baseline_rss, []
        with Probe(server.target) as probe:
            for second in range(int(args.duration_s)):
                time.sleep(1)
                rss.append(server.rss_mb())
                peak = max(peak, rss[-1])
                if second % 5 == 4:
                    calls = len(probe.latencies)
                    say(f"  {second + 1}s: RSS {rss[-1]:.0f} MiB, probe calls {calls}")
        stop.set()
        for thread in threads:
            thread.join(120)
        rows = decoder_rows(server) - rows_before
        end_rss = server.rss_mb()
        close_all(streams)
        time.sleep(2)
        result = {
            "streams": args.streams,
            "samples": args.samples,
            "duration_s": args.duration_s,
            "baseline_probe": quiet.summary(),
            "probe": probe.summary(),
            "sample_calls": dict(samples),
            "decoder_rows": int(rows),
            "stream_rows": int(rows - 1024 * samples["OK"] - 4 * len(probe.latencies)),
            "rss_baseline_mib": round(baseline_rss, 1),
            "rss_peak_growth_mib": round(peak - baseline_rss, 1),
            "rss_end_growth_mib": round(end_rss - baseline_rss, 1),
            "rss_after_cancel_growth_mib": round(server.rss_mb() - baseline_rss, 1),
        }
    finally:
        server.stop()
    met = result["probe"]["p99_ms"] < 100 and result["rss_peak_growth_mib"] < 300
    verdict = "met" if met else "MISSED"
    say(f"flood: {json.dumps(result)} -> {verdict}")
    result["verdict"] = verdict
    return result


def unread_memory(args: argparse.Namespace) -> dict[str, Any]:
    server = start_server("--log-level", "WARNING")
    try:
        time.sleep(1)
        before = server.rss_mb()
        request = pb.SampleRequest(n=1_000_000, seed=3, chunk_size=1)
        streams = open_unread_streams(server.target, args.unread, request)
        last = -1.0
        for _ in range(120):  # until the streams stop computing (their windows are full)
            time.sleep(1)
            rows = decoder_rows(server)
            if rows == last:
                break
            last = rows
        after = server.rss_mb()
        close_all(streams)
        result = {
            "streams": args.unread,
            "rows_computed": int(last),
            "rss_growth_mib": round(after - before, 1),
            "per_stream_mib": round((after - before) / args.unread, 2),
        }
    finally:
        server.stop()
    result["verdict"] = "met" if result["per_stream_mib"] <= 1.0 else "MISSED"
    say(f"unread-memory: {json.dumps(result)}")
    return result


def unauthenticated_bodies(args: argparse.Namespace) -> dict[str, Any]:
    token = Path(tempfile.mkdtemp(prefix="vaeserve-chaos-")) / "token"
    token.write_text("chaos-token\n")
    server = start_server("--log-level", "WARNING", "--auth-token-file", str(token))
    try:
        time.sleep(1)
        before, peak = server.rss_mb(), 0.0
        body = pb.SampleRequest(n=1, model="x" * (30 << 20))
        codes: Counter[str] = Counter()

        def sender(i: int, stop: threading.Event) -> None:
            with grpc.insecure_channel(server.target, options=BIG) as channel:
                stub = vae_pb2_grpc.VaeServiceStub(channel)
                for _ in range(args.bodies_per_client):
                    try:
                        stub.Sample(body, timeout=60)
                        codes["OK"] += 1
                    except grpc.RpcError as exc:
                        codes[exc.code().name] += 1

        _, threads = loop_threads(args.body_clients, sender)
        while any(t.is_alive() for t in threads):
            peak = max(peak, server.rss_mb())
            time.sleep(0.05)
        result = {
            "clients": args.body_clients,
            "bodies": sum(codes.values()),
            "codes": dict(codes),
            "rss_peak_growth_mib": round(peak - before, 1),
        }
    finally:
        server.stop()
    # The bound: what 8 connections' flow-control windows take in before the refusal, not bodies.
    ok = set(result["codes"]) == {"UNAUTHENTICATED"} and result["rss_peak_growth_mib"] < 128
    result["verdict"] = "met" if ok else "MISSED"
    say(f"unauthenticated-bodies: {json.dumps(result)}")
    return result


SCENARIOS = {
    "flood": flood,
    "unread-memory": unread_memory,
    "unauthenticated-bodies": unauthenticated_bodies,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    names = ", ".join(SCENARIOS)
    parser.add_argument("scenarios", nargs="*", help=f"some of {names} (default: all)")
    parser.add_argument("--streams", type=int, default=200, help="unread streams in the flood")
    parser.add_argument("--samples", type=int, default=64, help="concurrent max-size Samples")
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--baseline-s", type=float, default=5.0)
    parser.add_argument("--unread", type=int, default=20, help="streams in unread-memory")
    parser.add_argument("--body-clients", type=int, default=8)
    parser.add_argument("--bodies-per-client", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--serve-arg", dest="serve_args", action="append", default=[],
        help="extra `vaeserve serve` argument for the flood (repeat for each)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = args.scenarios or list(SCENARIOS)
    results = {}
    for name in args.scenarios:
        say(f"== {name}")
        results[name] = SCENARIOS[name](args)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**previous, **results}, indent=2) + "\n")
    say(f"wrote {args.out}")
    return 0 if all(r["verdict"] == "met" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
