"""Real servers for the integration tests: grpc.aio on 127.0.0.1, port 0, real ONNX Runtime
sessions on the `tiny` model (12x12x1, latent 3), called through the generated stubs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from vaeserve.service.config import Settings
from vaeserve.service.grpc.server import VaeServer, create_server
from vaeserve.v1 import vae_pb2_grpc

# Small limits, so the tests reach them with small requests.
TEST_SETTINGS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "metrics_port": -1,
    "max_batch_size": 32,
    "max_delay_ms": 5.0,
    "max_queue": 4096,
    "max_message_bytes": 100_000,
    "max_images_per_request": 100,
    "max_sample_n": 200,
    "max_stream_n": 5000,
    "drain_grace_s": 5.0,
}


class ServerThread:
    """A VaeServer on its own event loop in a background thread, so tests call it with the
    blocking stubs and client like any remote caller."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: VaeServer | None = None
        self.port = 0

    def start(self) -> ServerThread:
        self.thread.start()
        self.server, self.port = self.call(create_server(self.settings), timeout=120)
        return self

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.metrics_port}/metrics"

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextmanager
def running_server(repository: Path, **overrides: Any) -> Iterator[ServerThread]:
    server = ServerThread(Settings(repository=repository, **{**TEST_SETTINGS, **overrides}))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(tiny_repository: Path) -> Iterator[ServerThread]:
    """One shared server per test worker (default providers "auto")."""
    with running_server(tiny_repository) as running:
        yield running


@pytest.fixture(scope="session")
def fp16_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model (same weights as `tiny_repository`) exported with its float16 variants.
    Session-scoped: tests must not modify it."""
    from tests.conftest import save_untrained_checkpoint
    from vaeserve.export.onnx_export import export_model

    root = tmp_path_factory.mktemp("fp16-repo")
    ckpt = save_untrained_checkpoint(root.parent / f"{root.name}.pt")
    export_model(ckpt, root, "tiny", 1, batch_sizes=(1, 3), fp16=True)
    return root


@pytest.fixture(scope="session")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> vae_pb2_grpc.VaeServiceStub:
    return vae_pb2_grpc.VaeServiceStub(channel)


@dataclass
class ServeProcess:
    """A real `vaeserve serve` subprocess (torch made unimportable first)."""

    process: subprocess.Popen[str]
    port: int
    metrics_port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


SERVE_CODE = (
    "import sys; sys.modules['torch'] = None; "
    "from vaeserve.cli import main; sys.exit(main(sys.argv[1:]))"
)


@contextmanager
def serve_process(repository: Path | None, workdir: Path, *flags: str) -> Iterator[ServeProcess]:
    """`vaeserve serve` on free loopback ports, on the CPU; `repository` None: every other
    setting at its default (the bundled model, providers "auto")."""
    port_file, log = workdir / "ports.json", workdir / "serve.log"
    chosen = [] if repository is None else ["--repository", str(repository), "--providers", "cpu"]
    cmd = [
        sys.executable, "-c", SERVE_CODE, "serve", *chosen,
        "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1",
        "--port-file", str(port_file), *flags,
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not port_file.is_file():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"vaeserve serve did not start:\n{log.read_text()}")
            time.sleep(0.05)
        ports = json.loads(port_file.read_text())
        yield ServeProcess(process, ports["port"], ports["metrics_port"], log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
