"""The grpc.aio server's lifecycle: bind, health, reflection, limits, keepalive, load, serve,
and on SIGTERM: readiness NOT_SERVING -> in-flight work finishes -> stop.

Liveness ("") answers SERVING from the moment the port is bound; readiness
("vaeserve.v1.VaeService") only once every model is loaded and warmed up, and NOT_SERVING again as
soon as draining starts, so load balancers stop sending before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vaeserve import __version__
from vaeserve.service.addresses import grpc_address, http_host, write_port_file
from vaeserve.service.auth import TokenAuth, read_token
from vaeserve.service.config import Settings
from vaeserve.service.core import VaeCore
from vaeserve.service.errors import StartupError
from vaeserve.service.grpc import kserve
from vaeserve.service.grpc.interceptors import SERVICE, ServerState, ServiceInterceptor
from vaeserve.service.grpc.servicers import VaeServicer
from vaeserve.service.grpc.tls import server_credentials
from vaeserve.service.metrics import Metrics
from vaeserve.service.reload import Reloader, ReloadResult, fingerprint
from vaeserve.v1 import vae_pb2, vae_pb2_grpc

log = logging.getLogger(__name__)
GRPC_LOG = "grpc._cython.cygrpc"

SERVICE_NAME: str = vae_pb2.DESCRIPTOR.services_by_name["VaeService"].full_name
LIVENESS = ""
READINESS = SERVICE_NAME
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ClientGoneFilter(logging.Filter):
    """Drops grpcio's ERROR traceback for a stream whose client left while a message was being
    sent (`ExecuteBatchError ... SendMessageOperation`): the interceptor already counts the call
    as CANCELLED, and a client that opens and drops streams must not flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("ExecuteBatchError raised in core by servicer"):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return "SendMessageOperation" not in str(exc)


def quiet_client_gone() -> None:
    """Install ClientGoneFilter on grpcio's logger once per process."""
    logger = logging.getLogger(GRPC_LOG)
    if not any(isinstance(f, ClientGoneFilter) for f in logger.filters):
        logger.addFilter(ClientGoneFilter())


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """Channel arguments: message-size limits, keepalive, connection age, port sharing only
    between the workers of one `--workers N` server."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        # Two servers must not silently share a port (SO_REUSEPORT is on by default on Linux);
        # the workers of one server must (service/workers.py reserved the port for them).
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.drain_grace_s * 1000)),
        ]
    return options


class VaeServer:
    """One server: its own metrics registry, health state and models. `ready_gate`, if given, is
    awaited once the models are loaded and before readiness turns SERVING (the workers of one
    server wait for each other, service/workers.py); it must return once draining starts."""

    def __init__(
        self, settings: Settings, ready_gate: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.settings = settings
        self._ready_gate = ready_gate
        self.metrics = Metrics()
        self.state = ServerState(settings.max_concurrent_requests)
        self.health = health.aio.HealthServicer()
        self.servicer = VaeServicer()
        # KServe V2 (Open Inference Protocol); ServerReady says what readiness says.
        self.kserve = kserve.KServeServicer(
            ready=lambda: self.state.ready and not self.state.draining
        )
        self.core: VaeCore | None = None
        self.grpc: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port = 0
        self._metrics_http: Any = None
        self._stopping: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.reloader: Reloader | None = None
        self._watch: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[ReloadResult]] = set()

    async def start(self) -> None:
        """Bind and answer health at once; load the models; then report ready."""
        s = self.settings
        log.info("vaeserve %s starting with settings %s", __version__, s.model_dump_json())
        # Paths only are logged above; the token and the key stay out of every log line.
        auth = TokenAuth(read_token(s.auth_token_file)) if s.auth_token_file else None
        credentials = server_credentials(s)
        quiet_client_gone()
        self.grpc = grpc.aio.server(
            interceptors=[
                ServiceInterceptor(
                    self.state, self.metrics, auth, (SERVICE, kserve.SERVICE), kserve.PROBES
                )
            ],
            options=server_options(s),
        )
        vae_pb2_grpc.add_VaeServiceServicer_to_server(self.servicer, self.grpc)
        kserve.add_to_server(self.kserve, self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        if s.reflection:
            reflection.enable_server_reflection(
                (
                    SERVICE_NAME,
                    kserve.SERVICE.full_name,
                    health.SERVICE_NAME,
                    reflection.SERVICE_NAME,
                ),
                self.grpc,
            )
        await self.health.set(LIVENESS, SERVING)
        await self.health.set(READINESS, NOT_SERVING)
        self.port = bind(self.grpc, grpc_address(s.host, s.port), credentials)
        await self.grpc.start()
        log.info(
            "gRPC listening on %s:%d (%s, bearer token %s, reflection %s); loading models",
            s.host,
            self.port,
            "mutual TLS" if s.tls_client_ca else "TLS" if credentials else "plaintext",
            "required" if auth else "off",
            "on" if s.reflection else "off",
        )
        try:
            if s.metrics_port != 0:
                self._metrics_http, self.metrics_port = self.metrics.serve_http(
                    http_host(s.host), s.metrics_port
                )
            baseline = None
            if s.poll_repository_s > 0:  # before the scan: a change while loading is seen
                root = s.repository_root()
                baseline = await asyncio.to_thread(fingerprint, root)
            core = await asyncio.to_thread(VaeCore.load, s, self.metrics)
        except BaseException:
            await self._teardown(grace=0)
            raise
        if self.state.draining:  # a signal arrived while the models loaded
            await core.stop()
            return
        self.core = core
        self.core.start()
        self.servicer.core = self.kserve.core = self.core
        self.reloader = Reloader(core.registry, self.metrics)
        if s.poll_repository_s > 0:
            self._watch = asyncio.ensure_future(self.reloader.watch(s.poll_repository_s, baseline))
        if self._ready_gate is not None:
            await self._ready_gate()
            if self.state.draining:  # the drain stops the core
                return
        self.state.ready = True
        self.metrics.ready.set(1)
        await self.health.set(READINESS, SERVING)
        if s.port_file is not None:
            write_port_file(s.port_file, self.port, self.metrics_port)
        log.info("ready port=%d metrics_port=%d", self.port, self.metrics_port)

    def request_shutdown(self) -> None:
        """Signal-handler entry point: start draining once; later signals do nothing more."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._drain_and_stop())

    def request_reload(self) -> None:
        """Signal-handler entry point (SIGHUP): reload the repository in the background."""
        if self.reloader is None or self.state.draining:
            log.warning(
                "reload ignored: the server is %s", "draining" if self.reloader else "loading"
            )
            return
        task = asyncio.ensure_future(self.reloader.reload("SIGHUP"))
        self._reloads.add(task)  # keep a reference until it is done
        task.add_done_callback(self._reloads.discard)

    async def reload(self, reason: str = "requested") -> ReloadResult:
        """Rescan the repository and swap in new or changed versions (see service/reload.py)."""
        if self.reloader is None:
            raise RuntimeError("the server has not loaded its models yet")
        return await self.reloader.reload(reason)

    async def shutdown(self) -> None:
        """Drain and stop; returns once stopped."""
        self.request_shutdown()
        assert self._stopping is not None
        await self._stopping

    async def wait(self) -> None:
        """Until the server has stopped."""
        await self._stopped.wait()

    async def _drain_and_stop(self) -> None:
        grace = self.settings.drain_grace_s
        self.state.draining = True
        self.metrics.ready.set(0)
        await self.health.set(READINESS, NOT_SERVING)
        log.info(
            "draining: readiness NOT_SERVING, %d requests in flight, waiting up to %gs",
            self.state.in_flight,
            grace,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not await self.state.wait_idle(grace):
            log.warning(
                "drain grace of %gs ran out with %d requests in flight; stopping",
                grace,
                self.state.in_flight,
            )
        await self._teardown(grace=max(0.0, grace - (loop.time() - started)))
        log.info("stopped")

    async def _teardown(self, grace: float) -> None:
        if self.reloader is not None:  # a reload in progress ends after the version it loads
            self.reloader.close()
        if self._watch is not None:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        if self.grpc is not None:
            await self.grpc.stop(grace)
        if self._reloads:  # SIGHUP reloads: their worker thread would hold the process anyway
            await asyncio.gather(*self._reloads, return_exceptions=True)
        if self.core is not None:
            await self.core.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self._stopped.set()


async def create_server(settings: Settings) -> tuple[VaeServer, int]:
    """A started, ready server and its bound gRPC port (settings.port 0 picks a free one)."""
    server = VaeServer(settings)
    await server.start()
    return server, server.port


async def serve(settings: Settings) -> None:
    """`vaeserve serve`: run until SIGTERM or SIGINT, then drain and stop."""
    server = VaeServer(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, server, sig)
    loop.add_signal_handler(signal.SIGHUP, server.request_reload)
    await server.start()
    await server.wait()


def _on_signal(server: VaeServer, sig: signal.Signals) -> None:
    log.info("received %s", sig.name)
    server.request_shutdown()


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind `address` with TLS credentials or in plaintext; StartupError when it cannot."""
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
        raise StartupError(f"cannot listen on {address}: {exc}") from None
