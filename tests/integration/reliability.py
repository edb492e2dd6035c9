"""Helpers of the reliability tests: a process's memory from /proc, waiting for a condition,
and metric sums from a scrape."""

from __future__ import annotations

import time
from collections.abc import Callable


def proc_status_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory field of /proc/PID/status (VmRSS: resident now; VmHWM: the peak), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {what}"
        time.sleep(0.02)


def metric_sum(metrics: dict[str, float], name: str, *labels: str) -> float:
    """Sum of a metric's series whose labels contain every string in `labels`."""
    return sum(
        value
        for key, value in metrics.items()
        if (key == name or key.startswith(name + "{")) and all(label in key for label in labels)
    )
