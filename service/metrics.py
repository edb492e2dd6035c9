"""Prometheus metrics. Each server owns its CollectorRegistry, so several servers in one process
(tests) never clash, and nothing is registered at import time. The broken-version gauges are set
whole after each load and reload (`report_model_errors`), never added to, so they always say what
the last one found."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    start_http_server,
)

from vaeserve.service.errors import StartupError

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class GraphSeries:
    """One graph's labelled series, looked up once: `labels()` takes a lock and validates the
    label values on every call, which a per-request path should not pay."""

    queue_time: Any
    batch_size: Any
    batch_requests: Any
    inference_time: Any
    queue_depth: Any
    rejected: Any
    dropped_cancelled: Any
    dropped_deadline: Any


class Metrics:
    """Every metric the server exports; labels: method and code, or model, version and graph.
    The per-request series are cached children (`request_done`, `graph`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vaeserve_requests",
            "RPCs answered, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "vaeserve_request_latency_seconds",
            "RPC latency, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("vaeserve_in_flight_requests", "RPCs being handled", registry=r)
        graph = ["model", "version", "graph"]
        self.queue_time = Histogram(
            "vaeserve_queue_seconds",
            "Time a request piece waited for its batch",
            graph,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "vaeserve_batch_size",
            "Images per ONNX Runtime run",
            graph,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "vaeserve_batch_requests",
            "Request pieces merged into one run",
            graph,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_time = Histogram(
            "vaeserve_inference_seconds",
            "ONNX Runtime run time per batch",
            graph,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "vaeserve_queue_depth", "Request pieces waiting for a batch", graph, registry=r
        )
        self.dropped = Counter(
            "vaeserve_dropped",
            "Request pieces dropped before compute (cancelled or expired)",
            [*graph, "reason"],
            registry=r,
        )
        self.rejected = Counter(
            "vaeserve_rejected",
            "Request pieces refused because the queue was full",
            graph,
            registry=r,
        )
        self.ready = Gauge("vaeserve_ready", "1 when the server is ready to serve", registry=r)
        self.reloads = Counter(
            "vaeserve_reloads",
            "Model repository reloads, by result (ok, partial, failed, unchanged, stopped, error)",
            ["result"],
            registry=r,
        )
        self.model_errors = Gauge(
            "vaeserve_model_errors",
            "Model version folders that cannot be served from disk (last load or reload)",
            registry=r,
        )
        self.model_broken = Gauge(
            "vaeserve_model_version_broken",
            "1 for each model version folder that cannot be served from disk, including served "
            "versions kept in memory (last load or reload)",
            ["directory"],
            registry=r,
        )
        self.model = Info(
            "vaeserve_model",
            "A loaded model version and its providers",
            ["model", "version"],
            registry=r,
        )

        self._done: dict[tuple[str, str], tuple[Any, Any]] = {}

    def request_done(self, method: str, code: str, seconds: float) -> None:
        """Count one answered RPC and observe its latency."""
        series = self._done.get((method, code))
        if series is None:
            series = (self.requests.labels(method, code), self.latency.labels(method))
            self._done[(method, code)] = series
        series[0].inc()
        series[1].observe(seconds)

    def graph(self, model: str, version: str, graph: str) -> GraphSeries:
        """The batcher's series for one graph of one model version."""
        labels = (model, version, graph)
        return GraphSeries(
            queue_time=self.queue_time.labels(*labels),
            batch_size=self.batch_size.labels(*labels),
            batch_requests=self.batch_requests.labels(*labels),
            inference_time=self.inference_time.labels(*labels),
            queue_depth=self.queue_depth.labels(*labels),
            rejected=self.rejected.labels(*labels),
            dropped_cancelled=self.dropped.labels(*labels, "cancelled"),
            dropped_deadline=self.dropped.labels(*labels, "deadline"),
        )

    def report_model_errors(self, errors: dict[str, str]) -> None:
        """Publish the version folders that cannot be served ({folder: message}): their count and
        one series per folder, so an alert names the broken one. Replaces what was there: a
        repaired folder's series goes away."""
        self.model_errors.set(len(errors))
        self.model_broken.clear()
        for directory in errors:
            self.model_broken.labels(directory).set(1)

    def exposition(self) -> bytes:
        """The text format, as /metrics serves it."""
        return generate_latest(self.registry)

    def serve_http(self, host: str, port: int) -> tuple[Any, int]:
        """Start /metrics on a daemon thread; port -1 picks a free port. Returns (server, port)."""
        return serve_registry(self.registry, host, port)


def serve_registry(registry: CollectorRegistry, host: str, port: int) -> tuple[Any, int]:
    """/metrics for `registry` on a daemon thread (port -1: a free one); (server, port). A port
    that cannot be bound (taken, no permission) is a one-line StartupError naming the setting to
    change, not the socket's traceback. Also used by the workers' parent."""
    try:
        server, _thread = start_http_server(max(port, 0), addr=host, registry=registry)
    except OSError as exc:
        raise StartupError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another "
            "port with --metrics-port or VAESERVE_METRICS_PORT (0 turns /metrics off, "
            "-1 picks a free port)"
        ) from None
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return server, bound
