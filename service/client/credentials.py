"""Client credentials for a secured server: TLS (server verified against a root certificate, or
the system's roots), mutual TLS (a client certificate and key), and a bearer token.

The token travels as `authorization: Bearer <token>` on every call, added by a channel
interceptor, so it works on TLS and (for local testing) plaintext channels alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import grpc

from vaeserve.errors import InputError


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _Details(_CallDetails, grpc.ClientCallDetails):
    """ClientCallDetails with the token added (grpc wants an instance of its ABC)."""


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return "BearerToken(<redacted>)"

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        d: Any = details
        metadata = [*(d.metadata or ()), self._header]
        return _Details(
            d.method, d.timeout, metadata, d.credentials, d.wait_for_ready, d.compression
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:  # fmt: skip
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:  # fmt: skip
        return continuation(self._with_token(client_call_details), request)


def open_channel(
    target: str,
    options: list[tuple[str, Any]],
    *,
    tls: bool = False,
    root_certificates: bytes | None = None,
    client_certificate: bytes | None = None,
    client_key: bytes | None = None,
    token: str | None = None,
) -> grpc.Channel:
    """A channel to `target`: TLS when `tls` or any certificate is given, else plaintext; with
    the bearer token on every call when `token` is given."""
    if (client_certificate is None) != (client_key is None):
        raise InputError("client_certificate and client_key go together (mutual TLS)")
    if tls or root_certificates is not None or client_certificate is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root_certificates,
            private_key=client_key,
            certificate_chain=client_certificate,
        )
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    if token:
        channel = grpc.intercept_channel(channel, BearerToken(token))
    return channel
