"""service/metrics_merge.py on the real expositions of two `Metrics` registries (what two workers
serve): counters and histograms summed per label set, gauges summed except readiness (minimum)
and the broken-model and info series (maximum), and one exposition unchanged by a merge."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vaeserve.service.metrics import Metrics
from vaeserve.service.metrics_merge import NOT_READY, merge, render

GRAPH = ("tiny", "1", "decoder")


def values(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    text = text.decode() if isinstance(text, bytes) else text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def workers() -> tuple[Metrics, Metrics]:
    a, b = Metrics(), Metrics()
    a.requests.labels("Decode", "OK").inc(3)
    b.requests.labels("Decode", "OK").inc(4)
    b.requests.labels("Sample", "INVALID_ARGUMENT").inc()  # only on one worker
    for seconds in (0.002, 0.02):
        a.latency.labels("Decode").observe(seconds)
    b.latency.labels("Decode").observe(0.2)
    a.batch_size.labels(*GRAPH).observe(8)
    b.batch_size.labels(*GRAPH).observe(64)
    a.in_flight.set(2)
    b.in_flight.set(5)
    a.queue_depth.labels(*GRAPH).set(1)
    b.queue_depth.labels(*GRAPH).set(3)
    a.ready.set(1)
    b.ready.set(0)
    a.report_model_errors({})
    b.report_model_errors({"tiny/2": "bad graph"})
    a.model.labels("tiny", "1").info({"providers": "CPUExecutionProvider", "threads": "1"})
    b.model.labels("tiny", "1").info({"providers": "CPUExecutionProvider", "threads": "1"})
    return a, b


def merged(*registries: Metrics) -> dict:
    return values(render(merge(m.exposition().decode() for m in registries)))


def test_counters_are_summed_per_label_set(workers):
    out = merged(*workers)
    assert value(out, "vaeserve_requests_total", method="Decode", code="OK") == 7
    assert value(out, "vaeserve_requests_total", method="Sample", code="INVALID_ARGUMENT") == 1


def test_histograms_are_summed_bucket_by_bucket(workers):
    out = merged(*workers)
    name = "vaeserve_request_latency_seconds"
    assert value(out, f"{name}_count", method="Decode") == 3
    assert value(out, f"{name}_sum", method="Decode") == pytest.approx(0.222)
    assert value(out, f"{name}_bucket", method="Decode", le="0.0025") == 1
    assert value(out, f"{name}_bucket", method="Decode", le="0.025") == 2
    assert value(out, f"{name}_bucket", method="Decode", le="+Inf") == 3
    graph = dict(zip(("model", "version", "graph"), GRAPH, strict=True))
    assert value(out, "vaeserve_batch_size_bucket", **graph, le="8.0") == 1
    assert value(out, "vaeserve_batch_size_bucket", **graph, le="64.0") == 2
    assert value(out, "vaeserve_batch_size_sum", **graph) == 72


def test_amount_gauges_are_summed(workers):
    out = merged(*workers)
    assert value(out, "vaeserve_in_flight_requests") == 7
    graph = dict(zip(("model", "version", "graph"), GRAPH, strict=True))
    assert value(out, "vaeserve_queue_depth", **graph) == 4


def test_ready_is_the_minimum_and_a_missing_worker_is_not_ready(workers):
    a, b = workers
    assert value(merged(a, b), "vaeserve_ready") == 0
    b.ready.set(1)
    assert value(merged(a, b), "vaeserve_ready") == 1
    alone = values(render(merge([a.exposition().decode(), NOT_READY])))
    assert value(alone, "vaeserve_ready") == 0


def test_broken_model_and_info_series_are_the_maximum(workers):
    out = merged(*workers)
    assert value(out, "vaeserve_model_errors") == 1
    assert value(out, "vaeserve_model_version_broken", directory="tiny/2") == 1
    info = {"model": "tiny", "version": "1", "providers": "CPUExecutionProvider", "threads": "1"}
    assert value(out, "vaeserve_model_info", **info) == 1  # not 2


def test_created_timestamps_are_the_earliest():
    def text(created: float) -> str:
        return (
            "# TYPE vaeserve_reloads_created gauge\n"
            f'vaeserve_reloads_created{{result="ok"}} {created}\n'
        )

    out = values(render(merge([text(200.0), text(100.0), text(300.0)])))
    assert value(out, "vaeserve_reloads_created", result="ok") == 100


def test_one_exposition_comes_back_unchanged(workers):
    a, _ = workers
    text = a.exposition()
    assert render(merge([text.decode()])) == text


def test_nothing_to_merge_is_an_empty_exposition():
    assert render(merge([])) == b""
