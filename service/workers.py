"""`vaeserve serve --workers N` (N > 1): N server processes on one port, behind one /metrics and
one health state, for when one process's event loop is the limit.

The parent (`Supervisor`) reserves the port with a SO_REUSEPORT socket it never listens on (as
grpc's examples/python/multiprocessing does) and starts the workers with the "spawn" method:
fresh interpreters, since grpc is not fork-safe once a server started and no worker should share
the parent's state. Each worker is a whole `VaeServer` (its own sessions, batchers and metrics)
bound to that port with SO_REUSEPORT; the kernel spreads new connections over them.

- Readiness: a worker reports "loaded" and waits at the server's ready gate; once every worker
  has loaded, the parent sets one Event, each turns readiness SERVING and reports "ready", and
  the parent writes `port_file`. Liveness is SERVING in each worker once it is bound.
- SIGTERM / SIGINT to the parent: SIGTERM to every worker; each drains (readiness NOT_SERVING at
  once) and the parent exits 0 once all have stopped. SIGHUP is forwarded (to a worker still
  loading, once it has loaded).
- Metrics: each worker serves its registry on an ephemeral loopback port; the parent's /metrics
  scrapes and merges them (service/metrics_merge.py) and adds `vaeserve_workers`.
- A worker that dies unexpectedly: fail fast. The parent logs an error, drains the others and
  exits 1, so the orchestrator restarts the pod, which shows in its restart count; restarting a
  worker in place would hide a crash loop, and readiness would have to flip meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import http.client
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from vaeserve.errors import UserError
from vaeserve.service.addresses import http_host, write_port_file
from vaeserve.service.config import Settings
from vaeserve.service.errors import StartupError
from vaeserve.service.metrics import serve_registry
from vaeserve.service.metrics_merge import NOT_READY, merge

if TYPE_CHECKING:
    from vaeserve.service.grpc.server import VaeServer

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
KILL_MARGIN_S = 10.0  # workers still running this long after drain_grace_s are killed
SCRAPE_TIMEOUT_S = 5.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def run_workers(settings: Settings) -> int:
    """Run `settings.workers` workers until SIGTERM or SIGINT; the exit status (0: stopped as
    asked). StartupError when the port is taken or a worker cannot start."""
    reserved = reserve_port(settings.host, settings.port)
    try:
        port = int(reserved.getsockname()[1])
        log.info("supervisor (pid %d): %d workers on port %d", os.getpid(), settings.workers, port)
        return Supervisor(settings, port).run()
    finally:
        reserved.close()


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, never listening SO_REUSEPORT socket that holds HOST:PORT (0: a free one) for the
    workers. A port something already listens on is refused first, as one server refuses it:
    SO_REUSEPORT alone would silently join another server of the same user."""
    name = http_host(host)
    try:
        family, *_, address = socket.getaddrinfo(
            name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        if port:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    except OSError as exc:  # socket.gaierror included
        raise StartupError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


@dataclass
class Worker:
    """The parent's view of one worker process."""

    index: int
    process: BaseProcess
    conn: Connection | None  # the worker's status messages; None once it closed
    metrics_port: int = 0
    loaded: bool = False
    ready: bool = False
    reload_pending: bool = False
    failure: str | None = None
    exited: bool = False


class Supervisor:
    """The parent: starts the workers, forwards signals, gates readiness, serves the merged
    /metrics, writes the port file, and stops everything when a worker dies."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.metrics_port = 0
        self.ctx = multiprocessing.get_context("spawn")
        self.all_loaded = self.ctx.Event()
        self.workers: list[Worker] = []
        self.stopping = False
        self.status = 0
        self.kill_at: float | None = None
        self._signals: list[int] = []

    def run(self) -> int:
        """Until every worker has exited; the exit status."""
        wake, wake_write = socket.socketpair()
        for end in (wake, wake_write):
            end.setblocking(False)
        handled = (*STOP_SIGNALS, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        previous_fd = signal.set_wakeup_fd(wake_write.fileno())  # wakes `wait` on a signal
        http = self._serve_metrics()
        try:
            self.workers = [self._spawn(k) for k in range(self.settings.workers)]
            while not all(w.exited for w in self.workers):
                self._step(wake)
        finally:
            for w in self.workers:
                if not w.exited:  # only after a bug in the loop: no orphans
                    w.process.kill()
                    w.process.join()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake.close()
            wake_write.close()
            if http is not None:
                http.shutdown()
                http.server_close()
        failed = next((w for w in self.workers if w.failure), None)
        if failed is not None:
            raise StartupError(f"worker {failed.index}: {failed.failure}")
        log.info("all workers stopped; exit status %d", self.status)
        return self.status

    def _serve_metrics(self) -> Any:
        s = self.settings
        if s.metrics_port == 0:
            return None
        registry = CollectorRegistry()
        registry.register(WorkersCollector(self))
        host = http_host(s.host)
        server, self.metrics_port = serve_registry(registry, host, s.metrics_port)
        log.info("metrics of all workers on http://%s:%d/metrics", host, self.metrics_port)
        return server

    def _spawn(self, index: int) -> Worker:
        reader, writer = self.ctx.Pipe(duplex=False)
        # The worker's VaeServer serves no metrics port of its own: worker_main serves them on
        # loopback for this parent to merge.
        settings = self.settings.model_copy(
            update={"port": self.port, "metrics_port": 0, "port_file": None}
        )
        process = self.ctx.Process(
            target=worker_main,
            args=(settings, index, writer, self.all_loaded, os.getpid(), self.metrics_port != 0),
            name=f"vaeserve-worker-{index}",
        )
        process.start()
        writer.close()  # the worker holds the only writing end
        log.info("started worker %d (pid %d)", index, process.pid)
        return Worker(index, process, reader)

    def _step(self, wake: socket.socket) -> None:
        handles: list[Any] = [wake]
        handles += [w.conn for w in self.workers if w.conn is not None]
        handles += [w.process.sentinel for w in self.workers if not w.exited]
        ready = wait(handles, timeout=0.5)
        if wake in ready:
            while _drained(wake):
                pass
        while self._signals:
            self._handle_signal(self._signals.pop(0))
        for w in self.workers:
            if w.conn is not None and w.conn in ready:
                self._receive(w)
        for w in self.workers:
            if not w.exited and w.process.sentinel in ready:
                self._exited(w)
        if self.kill_at is not None and time.monotonic() > self.kill_at:
            self._kill_the_rest()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)  # handled by the loop, woken through the wakeup fd

    def _handle_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum != signal.SIGHUP:
            log.info("received %s: draining %d workers", name, self._alive())
            self._stop()
        elif self.stopping:
            log.warning("received SIGHUP while stopping: ignored")
        else:
            log.info("received SIGHUP: reloading %d workers", self._alive())
            for w in self.workers:
                if w.loaded:
                    self._send(w, signal.SIGHUP)
                else:  # its handler is not installed yet: once it has loaded
                    w.reload_pending = True

    def _receive(self, w: Worker) -> None:
        assert w.conn is not None
        try:
            kind, value = w.conn.recv()
        except (EOFError, OSError):
            w.conn.close()
            w.conn = None
            return
        if kind == "metrics":
            w.metrics_port = int(value)
        elif kind == "failed":
            w.failure = str(value)
        elif kind == "loaded":
            w.loaded = True
            if w.reload_pending and not self.stopping:
                self._send(w, signal.SIGHUP)
            if all(x.loaded for x in self.workers):
                log.info("all %d workers loaded; turning readiness SERVING", len(self.workers))
                self.all_loaded.set()
        elif kind == "ready":
            w.ready = True
            if all(x.ready for x in self.workers) and not self.stopping:
                self._all_ready()

    def _all_ready(self) -> None:
        if self.settings.port_file is not None:
            write_port_file(self.settings.port_file, self.port, self.metrics_port)
        log.info(
            "ready: %d workers port=%d metrics_port=%d",
            len(self.workers),
            self.port,
            self.metrics_port,
        )

    def _exited(self, w: Worker) -> None:
        while w.conn is not None and w.conn.poll():  # what it said before it went
            self._receive(w)
        w.process.join()
        w.exited = True
        code = w.process.exitcode
        how = _exit_description(code)
        if self.stopping:
            log.info("worker %d exited (%s)", w.index, how)
            expected = (0, -signal.SIGTERM)  # killed by SIGTERM: it was still starting
            if code not in expected and w.failure is None:
                self.status = 1
            return
        self.status = 1
        if w.failure is not None:
            log.error("worker %d could not start (%s): stopping the others", w.index, how)
        else:
            log.error(
                "worker %d (pid %s) died unexpectedly (%s): stopping all workers and exiting "
                "with status 1, so the pod is restarted",
                w.index,
                w.process.pid,
                how,
            )
        self._stop()

    def _stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.kill_at = time.monotonic() + self.settings.drain_grace_s + KILL_MARGIN_S
        for w in self.workers:
            self._send(w, signal.SIGTERM)

    def _kill_the_rest(self) -> None:
        for w in self.workers:
            if not w.exited:
                log.error("worker %d still running after the drain grace: killing it", w.index)
                self._send(w, signal.SIGKILL)
        self.status, self.kill_at = 1, None

    def _send(self, w: Worker, sig: signal.Signals) -> None:
        if w.exited or w.process.pid is None:  # not yet reaped: its pid cannot be reused
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.process.pid, sig)

    def _alive(self) -> int:
        return sum(not w.exited for w in self.workers)


class WorkersCollector(Collector):
    """The parent's /metrics: every worker's own, scraped and merged, and `vaeserve_workers`.
    Runs on the metrics HTTP thread; it only reads the supervisor's state."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        workers = list(self.supervisor.workers)
        ports = [w.metrics_port for w in workers if w.metrics_port and not w.exited]
        texts = [text for text in map(scrape, ports) if text is not None]
        if len(texts) < self.supervisor.settings.workers:  # one missing: not ready
            texts.append(NOT_READY)
        yield from merge(texts)
        alive = sum(not w.exited for w in workers)
        yield GaugeMetricFamily("vaeserve_workers", "Worker processes alive", value=alive)


def scrape(port: int) -> str | None:
    """A worker's /metrics text from its loopback port (no proxy settings apply); None if it
    did not answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT_S)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode()
        return body if response.status == 200 else None
    except (OSError, http.client.HTTPException) as exc:
        log.warning("worker metrics on port %d did not answer: %s", port, exc)
        return None
    finally:
        connection.close()


# --- the worker process ----------------------------------------------------------------------


def worker_main(
    settings: Settings, index: int, conn: Connection, all_loaded: Event, parent: int, metrics: bool
) -> None:
    """A worker's entry point (spawned): one VaeServer on the shared port until SIGTERM."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C and forwards it
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server's loop handles it
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s worker={index} %(name)s: %(message)s",
    )
    try:
        asyncio.run(_serve_worker(settings, conn, all_loaded, metrics))
    except UserError as exc:  # e.g. a StartupError: one line here and in the parent's error
        log.error("cannot start: %s", exc)
        _tell(conn, "failed", str(exc))
        raise SystemExit(exc.exit_status) from None
    finally:
        conn.close()


async def _serve_worker(
    settings: Settings, conn: Connection, all_loaded: Event, metrics: bool
) -> None:
    from vaeserve.service.grpc.server import VaeServer

    server = VaeServer(settings, ready_gate=lambda: _wait_for_all(server, conn, all_loaded))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, _on_sigterm, server)
    loop.add_signal_handler(signal.SIGHUP, server.request_reload)
    http_server = None
    if metrics:
        http_server, port = server.metrics.serve_http("127.0.0.1", -1)
        log.info("metrics for the supervisor on 127.0.0.1:%d", port)
        _tell(conn, "metrics", port)
    try:
        await server.start()
        if server.state.ready:
            _tell(conn, "ready")
        await server.wait()
    finally:
        if http_server is not None:
            http_server.shutdown()
            http_server.server_close()


async def _wait_for_all(server: VaeServer, conn: Connection, all_loaded: Event) -> None:
    """The ready gate: report this worker loaded, then wait for every worker (or a drain)."""
    _tell(conn, "loaded")
    while not server.state.draining:
        if await asyncio.to_thread(all_loaded.wait, 0.1):
            return


def _on_sigterm(server: VaeServer) -> None:
    log.info("received SIGTERM")
    server.request_shutdown()


def _tell(conn: Connection, kind: str, value: object = None) -> None:
    with contextlib.suppress(OSError):  # the parent is gone; PR_SET_PDEATHSIG stops this worker
        conn.send((kind, value))


def _die_with_parent(parent: int) -> None:
    """Have Linux send this worker SIGTERM when the parent dies, so no orphan keeps serving."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # it died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


# --- small helpers (server.py has the same two; importing it would load grpc and ONNX Runtime
# into the parent, which serves no RPC) ---------------------------------------------------------


def _drained(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(512))
    except BlockingIOError:
        return False


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"
