"""The benchmark harness's own parts still work against the code they measure: `make bench` once
failed at its first step for a whole issue because nothing ran it. Short runs only; the figures
come from `make bench` and `make bench-peers`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def python(*args: str, timeout: float = 120) -> str:
    """`python ARGS` from the repository root (where `benchmarks` is importable); stdout."""
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def loadgen(target: str, *flags: str) -> dict:
    out = python("-m", "benchmarks.loadgen", "--target", target, "--seconds", "0.3", *flags)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "flags",
    [
        ("--batch", "3"),  # the typed client, one caller
        ("--batch", "1", "--concurrency", "4"),  # grpc.aio callers
        ("--batch", "2", "--aio"),  # grpc.aio at one caller, as bench-peers drives every server
    ],
)
def test_the_load_generator_measures_the_service(server, flags):
    result = loadgen(server.target, *flags)
    assert result["requests"] > 0 and result["errors"] == 0
    assert result["p50_ms"] > 0


def test_the_plain_floor_serves_decode_to_the_same_load_generator(tmp_path):
    port_file = tmp_path / "plain.json"
    cmd = [sys.executable, "-m", "benchmarks.peers.plain", "--port-file", str(port_file)]
    process = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the plain server did not start"
            time.sleep(0.05)
        port = json.loads(port_file.read_text())["port"]
        result = loadgen(f"127.0.0.1:{port}", "--batch", "1", "--concurrency", "4")
        assert result["requests"] > 0 and result["errors"] == 0
    finally:
        process.kill()
        process.wait(10)


CHECKS = """
import numpy as np
from benchmarks import report
from benchmarks.inprocess import session
from vaeserve.service.repository import ModelRepository, bundled_repository

spec = ModelRepository(bundled_repository()).scan().resolve()
(images,) = session(spec, "decoder", 1, None).run(np.zeros((3, spec.latent_dim), np.float32))
assert images.shape == (3, *spec.image_shape), images.shape
start, end = report.PEERS
old = f"# old page\\n\\n{start}\\npeers table\\n{end}\\n"
assert report.kept_blocks(old) == f"{start}\\npeers table\\n{end}", report.kept_blocks(old)
assert report.kept_blocks("# no block") == ""
print("ok")
"""


def test_in_process_sessions_open_and_make_bench_keeps_the_peers_block():
    assert python("-c", CHECKS).strip() == "ok"


def test_bench_training_quick_run_reports_each_dataset_and_exits_on_collapse(tmp_path):
    """`make bench-training --quick`: every dataset's runs and NELBO spread in the JSON, and the
    exit status follows the collapse verdict (checked both ways on fabricated rows)."""
    from benchmarks import training_robustness as bench

    cmd = [sys.executable, "-m", "benchmarks.training_robustness", "--quick", "--no-docs"]
    done = subprocess.run(
        [*cmd, "--work", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    results = json.loads((tmp_path / bench.JSON_NAME).read_text())
    assert set(results["summary"]) == {"shapes", "scenes32"}
    for name, summary in results["summary"].items():
        assert summary["runs"] == summary["finished"] == 2, (name, summary)
        for key in ("val_nelbo_mean", "val_nelbo_std", "val_nelbo_range", "val_kl_min"):
            assert isinstance(summary[key], float) and summary[key] == summary[key], (name, key)
        assert summary["val_nelbo_range"] >= 0
    assert len(results["runs"]) == 4 and "verdict:" in done.stdout
    assert done.returncode == int(any(r["collapsed"] for r in results["runs"]))
    assert (tmp_path / bench.PNG_NAME).stat().st_size > 0

    def row(dataset: str, seed: int, collapsed: bool = False) -> dict:
        return {"dataset": dataset, "seed": seed, "images": 4000, "epochs": 8, "latent_dim": 2,
                "val_nelbo": 150.0 + seed, "val_kl": 6.0, "active_units": 2 - 2 * collapsed,
                "collapsed": collapsed, "seconds": 1.0}  # fmt: skip

    healthy = [row(d, s) for d in ("a", "b", "c", "d") for s in range(10)]
    verdict = bench.verdict(healthy)
    assert verdict["met"] and bench.exit_status(verdict) == 0
    one_collapsed = [*healthy[:-1], row("d", 9, collapsed=True)]
    verdict = bench.verdict(one_collapsed)
    assert not verdict["met"] and not verdict["checks"]["zero_collapses"]
    assert bench.exit_status(verdict) == 1
    too_few = bench.verdict(healthy[:30])  # 3 datasets: acceptance not met, but no collapse
    assert not too_few["met"] and bench.exit_status(too_few) == 0
    assert bench.is_collapsed({"collapsed": False, "history": [{"active_units": 0}]})
    assert not bench.is_collapsed({"collapsed": False, "history": [{"active_units": 1}]})
