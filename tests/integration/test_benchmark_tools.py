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
