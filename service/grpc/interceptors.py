"""The one place where requests are admitted, counted, timed, and where every error becomes a
gRPC status. Domain errors keep their message (it says what was wrong); anything unexpected
becomes INTERNAL with a generic message and an id that finds the logged traceback. Every status
carries google.rpc details (ErrorInfo with a stable reason, BadRequest with the field path,
RetryInfo where retrying helps) built here from what the domain error carries.

The token and admission (draining, loading, too many calls) are checked from the call's
metadata before its body is read: a refused call is answered by a handler that never reads or
parses the request, so an unauthenticated 30 MiB body costs no more than its flow-control
window. A body that protobuf cannot parse is INVALID_ARGUMENT, counted like any other status,
and logged at WARNING at most once per `UNDECODABLE_LOG_INTERVAL_S`, without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from vaeserve.service.auth import TokenAuth
from vaeserve.service.errors import (
    DeadlineExpired,
    InvalidInput,
    LimitExceeded,
    ModelNotFoundError,
    Overloaded,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from vaeserve.service.metrics import Metrics
from vaeserve.v1 import vae_pb2

log = logging.getLogger(__name__)

SERVICE = vae_pb2.DESCRIPTOR.services_by_name["VaeService"]
SERVICE_PREFIX = f"/{SERVICE.full_name}/"
MAX_STATUS_MESSAGE = 1000  # characters: a status message always fits stock metadata limits
MAX_FIELD_PATH = 100  # characters of a BadRequest field path (paths are ours, never echoed)
UNDECODABLE_LOG_INTERVAL_S = 10.0

ERROR_DOMAIN = "vaeserve.v1"  # ErrorInfo.domain of every reason (docs/service.md#errors)

# Domain error -> status code, and the ErrorInfo reason of errors that carry none of their own.
# Order matters only for subclasses (none overlap today). Fixed limits stay RESOURCE_EXHAUSTED
# (retrying never helps); overload is UNAVAILABLE, the code retry policies retry (with RetryInfo).
STATUS: tuple[tuple[type[BaseException], grpc.StatusCode, str], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND"),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVER_LIMIT"),
    (Overloaded, grpc.StatusCode.UNAVAILABLE, "QUEUE_FULL"),
    (Unavailable, grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"),
    (DeadlineExpired, grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE"),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
)


@dataclass(frozen=True)
class Failure:
    """A status for the client: code, message, and the google.rpc error details to attach."""

    code: grpc.StatusCode
    message: str
    details: tuple[Message, ...] = ()

    def trailing_metadata(self) -> tuple[tuple[str, bytes | str], ...]:
        """`grpc-status-details-bin`: a google.rpc.Status with the same code and message."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        for detail in self.details:
            status.details.add().Pack(detail)
        return tuple(rpc_status.to_status(status).trailing_metadata)


def status_for(exc: BaseException) -> Failure:
    """The status, client-facing message and error details for an exception from a handler."""
    for kind, code, default_reason in STATUS:
        if isinstance(exc, kind):
            message = str(exc)  # values from the client are already cut short where they appear
            if len(message) > MAX_STATUS_MESSAGE:  # the last guard: never an unbounded status
                message = message[: MAX_STATUS_MESSAGE - 3] + "..."
            return Failure(code, message, _details(exc, getattr(exc, "reason", default_reason)))
    error_id = secrets.token_hex(4)
    log.error("internal error %s", error_id, exc_info=exc)
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=ERROR_DOMAIN, metadata={"error_id": error_id}
    )
    message = f"internal error (id {error_id}); see the server log"
    return Failure(grpc.StatusCode.INTERNAL, message, (info,))


def _details(exc: BaseException, reason: str) -> tuple[Message, ...]:
    """ErrorInfo always; BadRequest for a request field to fix; RetryInfo when retrying helps.
    Only bounded values go in: the reason, setting names, field paths and the short message."""
    metadata = {"limit": exc.limit} if isinstance(exc, LimitExceeded) else {}
    details: list[Message] = [
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
    ]
    if isinstance(exc, InvalidInput | LimitExceeded):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field[:MAX_FIELD_PATH], description=str(exc)[:MAX_STATUS_MESSAGE]
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    delay = getattr(exc, "retry_after_s", None)
    if delay is not None:
        retry_delay = duration_pb2.Duration()
        retry_delay.FromTimedelta(timedelta(seconds=delay))
        details.append(error_details_pb2.RetryInfo(retry_delay=retry_delay))
    return tuple(details)


class ServerState:
    """Readiness, draining and the count of in-flight RPCs the drain waits for."""

    def __init__(self, max_in_flight: int | None = None) -> None:
        self.ready = False
        self.draining = False
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def admit(self, entering: bool = False) -> None:
        """Raise unless a call may be served now. `entering`: asked before the call is counted
        in `in_flight` (from its metadata, before its body is read); otherwise after."""
        if self.draining:
            raise Unavailable("server is shutting down; retry on another replica")
        if not self.ready:
            raise Unavailable(
                "server is starting: models are still loading", reason="LOADING", retry_after_s=1.0
            )
        if self.max_in_flight is not None and self.in_flight + entering > self.max_in_flight:
            raise Overloaded(
                f"too many concurrent requests: {self.max_in_flight} already in flight "
                "(max_concurrent_requests); retry later",
                reason="CONCURRENCY_LIMIT",
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


@dataclass(frozen=True)
class Undecodable:
    """What the lenient deserializer returns for a body protobuf cannot parse."""

    message_type: str
    size: int


class RateLimitedLog:
    """A WARNING at most once per `interval_s`, saying how many were suppressed meanwhile: a
    flood of bad requests must not become a flood of log lines."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last such line)" if self._suppressed else ""
        log.warning(message + "%s", *args, more)
        self._next, self._suppressed = now + self.interval_s, 0


def lenient(deserialize: Callable[[bytes], Any], message_type: str) -> Callable[[bytes], Any]:
    """The request deserializer, returning `Undecodable` instead of raising: grpcio would turn
    the exception into UNKNOWN with the exception's class name and log a traceback."""

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception:  # DecodeError, or anything else protobuf raises on garbage
            return Undecodable(message_type, len(raw))

    return parse


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every method of `services` (VaeService by default; the server adds KServe V2;
    never health or reflection) with authentication,
    admission, body checks, metrics, in-flight counting and error mapping."""

    def __init__(
        self,
        state: ServerState,
        metrics: Metrics,
        auth: TokenAuth | None = None,
        services: tuple[ServiceDescriptor, ...] = (SERVICE,),
        probes: frozenset[str] = frozenset(),
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.auth = auth
        self.undecodable_log = RateLimitedLog(UNDECODABLE_LOG_INTERVAL_S)
        # Read at scrape time: no gauge update (and its lock) per call.
        metrics.in_flight.set_function(lambda: state.in_flight)
        # The wrapped handler of each method, built on its first call: per call only the
        # metadata checks run (method path -> (the service's handler, the wrapper)).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        # The wrapped services' methods by path (VaeService, KServe V2); others pass untouched.
        self._methods: dict[str, MethodDescriptor] = {
            f"/{service.full_name}/{m.name}": m for service in services for m in service.methods
        }
        # Readiness probes of a wrapped service (KServe's ServerLive, ServerReady): answered
        # while loading and draining too, as the health service is, and never counted in flight.
        self.probes = probes

    def _refusal(self, details: grpc.HandlerCallDetails, admit: bool) -> ServiceError | None:
        """Why a call must be refused before its body is read (None: read it)."""
        try:
            if self.auth is not None:
                self.auth.check(details.invocation_metadata)  # type: ignore[attr-defined]
            if admit:
                self.state.admit(entering=True)
        except ServiceError as exc:
            return exc
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method_path: str = handler_call_details.method  # type: ignore[attr-defined]
        descriptor = self._methods.get(method_path)
        if handler is None or descriptor is None:
            return handler
        refusal = self._refusal(handler_call_details, method_path not in self.probes)
        if refusal is not None:
            return self._refused(descriptor.name, handler, refusal)
        cached = self._wrapped.get(method_path)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method_path] = (handler, self._wrap(method_path, handler))
        return cached[1]

    def _wrap(self, method_path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` behind the bookkeeping: lenient parsing, admission, metrics, errors."""
        descriptor = self._methods[method_path]
        method, message_type = descriptor.name, descriptor.input_type.full_name
        deserializer = lenient(handler.request_deserializer, message_type)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, method_path not in self.probes),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:  # responses leave the wrapper serialized
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream, handler.response_serializer),
                request_deserializer=deserializer,
            )
        return handler  # pragma: no cover - the service has no client-streaming methods

    def _refused(
        self, method: str, handler: grpc.RpcMethodHandler, refusal: ServiceError
    ) -> grpc.RpcMethodHandler:
        """A handler that answers `refusal` without reading the request: a request-streaming
        handler, so grpcio never receives or parses the body (the wire is the same)."""

        async def refuse(_requests: Any, context: grpc.aio.ServicerContext) -> Any:
            with _Call(self, method, context, counted=False) as call:
                await call.fail(refusal)

        async def refuse_stream(_requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(_requests, context)
            yield  # pragma: no cover - an async generator that never yields a response

        if handler.unary_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                refuse_stream, response_serializer=handler.response_serializer
            )
        return grpc.stream_unary_rpc_method_handler(
            refuse, response_serializer=handler.response_serializer
        )

    def _parsed(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            self.undecodable_log.warning(
                "%s: a body of %d bytes from %s is not a valid %s; answered INVALID_ARGUMENT",
                method,
                request.size,
                context.peer(),
                request.message_type,
            )
            raise InvalidInput(
                f"request is not a valid {request.message_type}",
                field="",
                reason="MALFORMED_REQUEST",
            )
        return request

    def _unary(
        self, method: str, behavior: Callable[..., Any], admit: bool = True
    ) -> Callable[..., Any]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with _Call(self, method, context, counted=admit) as call:
                try:
                    if admit:
                        self.state.admit()  # again, now that the call is counted
                    return await behavior(self._parsed(method, request, context), context)
                except Exception as exc:
                    await call.fail(exc)

        return wrapper

    def _stream(
        self, method: str, behavior: Callable[..., Any], serialize: Callable[[Any], bytes]
    ) -> Callable[..., Any]:
        """Each response is serialized here and the message object dropped before the send
        waits: a stream whose client stopped reading holds its bytes once, not twice."""

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with _Call(self, method, context) as call:
                try:
                    self.state.admit()  # again, now that the call is counted
                    async for response in behavior(self._parsed(method, request, context), context):
                        data = serialize(response)
                        del response
                        yield data
                except Exception as exc:
                    await call.fail(exc)

        return wrapper


class _Call:
    """One RPC's bookkeeping: in-flight count, latency and status-code metrics, recorded once,
    before the status reaches the client (abort sends it at once)."""

    def __init__(
        self,
        owner: ServiceInterceptor,
        method: str,
        context: grpc.aio.ServicerContext,
        *,
        counted: bool = True,
    ) -> None:
        self.owner = owner
        self.method = method
        self.context = context
        self.counted = counted  # in the in-flight count the drain waits for (refusals are not)
        self.started = 0.0
        self.done = False

    def __enter__(self) -> _Call:
        self.started = asyncio.get_running_loop().time()
        if self.counted:
            self.owner.state.enter()
        return self

    async def fail(self, exc: Exception) -> None:
        if isinstance(exc, grpc.aio.AbortError):  # a handler aborted by itself
            code = self.context.code()
            self.finish(code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN")
            raise exc
        failure = status_for(exc)
        self.finish(failure.code.name)
        await self.context.abort(
            failure.code, failure.message, trailing_metadata=failure.trailing_metadata()
        )

    def finish(self, code: str) -> None:
        if self.done:
            return
        self.done = True
        elapsed = asyncio.get_running_loop().time() - self.started
        self.owner.metrics.request_done(self.method, code, elapsed)
        if self.counted:
            self.owner.state.leave()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> None:
        if kind is not None and issubclass(kind, (asyncio.CancelledError, GeneratorExit)):
            self.finish(_ended_code(self.context))
        else:
            self.finish("OK" if kind is None else "UNKNOWN")
