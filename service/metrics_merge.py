"""One Prometheus exposition from the /metrics text of several worker processes
(`vaeserve serve --workers N`, service/workers.py): each series is combined over the workers by
what it means, so the parent's /metrics reads like one server's.

- counters, histograms and summaries: summed per identical label set (`le` included);
- gauges: summed (in flight, queue depth), except `vaeserve_ready` (the minimum: 1 only when
  every worker is ready) and the flags `vaeserve_model_errors`, `vaeserve_model_version_broken`
  and `*_info` (the maximum: a worker that sees a broken folder or serves a version says so);
- `*_created` timestamps: the earliest; any other type (info, stateset, unknown): the maximum.

Why merge text in the parent instead of prometheus_client's multiprocess mode: that mode writes
every increment to an mmap'd file (a cost on every request) and has no Info metrics; scraping
each worker's own registry costs only at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

Combine = Callable[[Sequence[float]], float]
SUMMED_TYPES = frozenset({"counter", "histogram", "summary", "gaugehistogram"})
MIN_GAUGES = frozenset({"vaeserve_ready"})
MAX_GAUGES = frozenset({"vaeserve_model_errors", "vaeserve_model_version_broken"})
# What a worker that did not answer a scrape contributes: it is not ready.
NOT_READY = "# TYPE vaeserve_ready gauge\nvaeserve_ready 0.0\n"


def _sum(values: Sequence[float]) -> float:
    return float(sum(values))


def combine_rule(family: Metric, sample_name: str) -> Combine:
    """How one sample of `family` is combined over the workers (see the module docstring)."""
    if sample_name.endswith("_created"):
        return min
    if family.type in SUMMED_TYPES:
        return _sum
    if family.type == "gauge":
        if family.name in MIN_GAUGES:
            return min
        if family.name in MAX_GAUGES or family.name.endswith("_info"):
            return max
        return _sum
    return max


def merge(texts: Iterable[str]) -> list[Metric]:
    """The families of all `texts` (text format 0.0.4), each series combined over the texts that
    have it; families and series keep the order in which they were first seen."""
    families: dict[str, Metric] = {}
    series: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
            values = series.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                values.setdefault(key, []).append(sample.value)
    for name, family in families.items():
        for (sample_name, labels), values in series[name].items():
            family.add_sample(sample_name, dict(labels), combine_rule(family, sample_name)(values))
    return list(families.values())


class Families(Collector):
    """Fixed families as a collector, so prometheus_client renders them (`render`)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render(families: Iterable[Metric]) -> bytes:
    """The text format of `families`, as /metrics serves it."""
    return generate_latest(Families(families))
