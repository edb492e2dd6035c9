"""The one place where requests are admitted, counted, timed, and where every error becomes a
gRPC status. Domain errors keep their message (it says what was wrong); anything unexpected
becomes INTERNAL with a generic message and an id that finds the logged traceback."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from vaeserve.service.auth import TokenAuth
from vaeserve.service.errors import (
    DeadlineExpired,
    InvalidInput,
    LimitExceeded,
    ModelNotFoundError,
    Overloaded,
    Unauthenticated,
    Unavailable,
)
from vaeserve.service.metrics import Metrics

log = logging.getLogger(__name__)

SERVICE_PREFIX = "/vaeserve.v1.VaeService/"

# Domain error -> status code. Order matters only for subclasses (none overlap today).
STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExpired, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for an exception raised by a handler."""
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code, str(exc)
    error_id = secrets.token_hex(4)
    log.error("internal error %s", error_id, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error (id {error_id}); see the server log"


class ServerState:
    """Readiness, draining and the count of in-flight RPCs the drain waits for."""

    def __init__(self, max_in_flight: int | None = None) -> None:
        self.ready = False
        self.draining = False
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def admit(self) -> None:
        if self.draining:
            raise Unavailable("server is shutting down; retry on another replica")
        if not self.ready:
            raise Unavailable("server is starting: models are still loading")
        if self.max_in_flight is not None and self.in_flight > self.max_in_flight:
            raise Overloaded(
                f"too many concurrent requests: {self.max_in_flight} already in flight "
                "(max_concurrent_requests); retry later"
            )

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True when no RPC is in flight any more, False if `timeout` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


def _ended_code(context: grpc.aio.ServicerContext) -> str:
    """Status name for an RPC whose task was cancelled: the client left or its deadline hit."""
    try:
        remaining = context.time_remaining()
    except Exception:  # pragma: no cover - defensive: the context may be half torn down
        remaining = None
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every VaeService method (not health or reflection) with authentication,
    admission, metrics, in-flight counting and error mapping."""

    def __init__(self, state: ServerState, metrics: Metrics, auth: TokenAuth | None = None) -> None:
        self.state = state
        self.metrics = metrics
        self.auth = auth

    def _admit(self, context: grpc.aio.ServicerContext) -> None:
        if self.auth is not None:
            self.auth.check(context.invocation_metadata())
        self.state.admit()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method_path: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or not method_path.startswith(SERVICE_PREFIX):
            return handler
        method = method_path.removeprefix(SERVICE_PREFIX)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # pragma: no cover - the service has no client-streaming methods

    def _unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with _Call(self, method, context) as call:
                try:
                    self._admit(context)
                    return await behavior(request, context)
                except Exception as exc:
                    await call.fail(exc)

        return wrapper

    def _stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with _Call(self, method, context) as call:
                try:
                    self._admit(context)
                    async for response in behavior(request, context):
                        yield response
                except Exception as exc:
                    await call.fail(exc)

        return wrapper


class _Call:
    """One RPC's bookkeeping: in-flight count, latency and status-code metrics, recorded once,
    before the status reaches the client (abort sends it at once)."""

    def __init__(
        self, owner: ServiceInterceptor, method: str, context: grpc.aio.ServicerContext
    ) -> None:
        self.owner = owner
        self.method = method
        self.context = context
        self.started = 0.0
        self.done = False

    def __enter__(self) -> _Call:
        self.started = asyncio.get_running_loop().time()
        self.owner.state.enter()
        self.owner.metrics.in_flight.inc()
        return self

    async def fail(self, exc: Exception) -> None:
        if isinstance(exc, grpc.aio.AbortError):  # a handler aborted by itself
            code = self.context.code()
            self.finish(code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN")
            raise exc
        status, message = status_for(exc)
        self.finish(status.name)
        await self.context.abort(status, message)

    def finish(self, code: str) -> None:
        if self.done:
            return
        self.done = True
        elapsed = asyncio.get_running_loop().time() - self.started
        m = self.owner.metrics
        m.requests.labels(self.method, code).inc()
        m.latency.labels(self.method).observe(elapsed)
        m.in_flight.dec()
        self.owner.state.leave()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> None:
        if kind is not None and issubclass(kind, (asyncio.CancelledError, GeneratorExit)):
            self.finish(_ended_code(self.context))
        else:
            self.finish("OK" if kind is None else "UNKNOWN")
