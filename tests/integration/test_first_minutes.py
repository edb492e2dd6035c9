"""A new user's first minutes against real processes: `vaeserve serve` with its defaults prints no
error line on a machine without a GPU, a busy metrics port is one line, and a client pointed at
no server is told how to start one."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc

from vaeserve.service.cuda_probe import cuda_usable
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import serve_process

CLI = "import sys; from vaeserve.cli import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_with_defaults_prints_no_error(tmp_path: Path):
    """Every setting left at its default (the bundled model, providers "auto") but the ports,
    so parallel runs do not clash. ONNX Runtime's own ERROR lines go to stderr, beside ours."""
    with serve_process(None, tmp_path) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            info = vae_pb2_grpc.VaeServiceStub(channel).GetModelInfo(
                pb.GetModelInfoRequest(), timeout=10
            )
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0
    output = srv.log.read_text()
    errors = [line for line in output.splitlines() if "ERROR" in line or "[E:" in line]
    assert errors == [], output
    usable, _ = cuda_usable()
    assert list(info.requested_providers) == (["cuda", "cpu"] if usable else ["cpu"])
    assert not info.gpu_fallback
    assert "providers auto: " in output  # the log says what was chosen, and why
    assert f"on {list(info.providers)}" in output


def test_busy_metrics_port_is_one_line_and_exit_1(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        flags = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", str(port)]
        result = subprocess.run(
            [sys.executable, "-c", CLI, "serve", *flags, "--providers", "cpu"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"vaeserve serve: error: cannot serve metrics on 127.0.0.1:{port}: ")
    assert "--metrics-port or VAESERVE_METRICS_PORT" in last


def test_client_without_a_server_says_how_to_start_one():
    target = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-c", CLI, "list-concepts", "--target", target, "--timeout", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"vaeserve list-concepts: error: UNAVAILABLE: no server at {target} (connection "
        "refused); start one with `vaeserve serve` or `make serve`"
    ]
