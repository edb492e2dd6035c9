"""`make bench`: every measurement in one run, written as JSON, PNG plots and
docs/performance.md. Ratios compare figures taken in the same run on the same machine."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort

from benchmarks import inprocess, paired, report, scenarios, server
from benchmarks.host import cpu_model
from benchmarks.server import start_server
from vaeserve import __version__
from vaeserve.service.config import PROVIDER_NAMES, available_cpus
from vaeserve.service.repository import ModelRepository, bundled_repository

log = logging.getLogger("benchmarks")


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    import numpy
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cpus": available_cpus(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "torch": str(torch.__version__),
        "numpy": numpy.__version__,
        "vaeserve": __version__,
        "platform": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--doc", type=Path, default=Path("docs/performance.md"))
    parser.add_argument(
        "--providers",
        default="cpu",
        help="cpu, or cuda,cpu on a GPU machine (the service and in-process ORT both use it)",
    )
    args = parser.parse_args()
    server.PROVIDERS[:] = ["--providers", args.providers]
    ort_providers = [PROVIDER_NAMES[p] for p in args.providers.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    quick = args.quick
    batches = [1, 8, 64, 256, 1024]
    seconds = 0.5 if quick else 2.0
    levels = [1, 8, 64] if quick else [1, 4, 16, 64, 128]
    threads = available_cpus()

    spec = ModelRepository(bundled_repository()).scan().resolve()
    results: dict[str, Any] = {
        "machine": machine(),
        "model": f"{spec.name} v{spec.version}",
        "threads": threads,
        "quick": quick,
    }
    log.info("machine: %s", results["machine"])
    results["onnxruntime"] = inprocess.ort_throughput(spec, batches, threads, ort_providers)
    results["providers"] = args.providers
    results["pytorch"] = inprocess.torch_throughput(spec, batches, threads)

    results["startup"] = scenarios.startup(repeats=2 if quick else 5)
    log.info(
        "start-up %.2f s, RSS after warm-up %.0f MB",
        results["startup"]["startup_s"],
        results["startup"]["rss_after_warmup_mb"],
    )
    srv = start_server()
    try:
        results["payload_bytes_per_image"] = scenarios.payload_bytes(srv.target)
        results["single_client"] = scenarios.single_client(srv, batches, seconds)
        results["rss_under_load_mb"] = srv.rss_mb()
        results["paired_service_fraction"] = paired.service_fraction(
            srv.target, spec, threads, ort_providers, rounds=2 if quick else 5, seconds=seconds
        )
    finally:
        srv.stop()
    results["concurrency"] = {
        "batching_on": scenarios.concurrency_sweep(levels, seconds, ()),
        "batching_off": scenarios.concurrency_sweep(levels, seconds, ("--max-batch-size", "1")),
    }
    results["paired_batching_gain"] = paired.batching_gain(
        clients=64, rounds=2 if quick else 4, seconds=seconds
    )
    results["seconds"] = time.perf_counter() - started
    results["command"] = "make bench" + (" BENCH_ARGS=--quick" if quick else "")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plots = report.plots(results, args.out)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    old = args.doc.read_text() if args.doc.exists() else ""
    page = report.markdown(results, plots, args.doc.parent)
    kept = report.kept_blocks(old)
    args.doc.write_text(page.rstrip() + "\n\n" + kept + "\n" if kept else page)
    log.info(
        "wrote %s, %s and %s in %.0f s",
        args.out / "results.json",
        ", ".join(map(str, plots)),
        args.doc,
        results["seconds"],
    )


if __name__ == "__main__":
    main()
