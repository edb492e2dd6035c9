"""Server TLS credentials from PEM files: TLS with `tls_cert` + `tls_key`, mutual TLS (clients
must present a certificate the CA signed) when `tls_client_ca` is set too."""

from __future__ import annotations

from pathlib import Path

import grpc

from vaeserve.service.config import Settings
from vaeserve.service.errors import StartupError


def read_pem(path: Path, setting: str) -> bytes:
    """A PEM file's bytes; StartupError naming the setting when it is unreadable or not PEM."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StartupError(f"{setting} {path}: cannot read it ({exc.strerror})") from None
    if b"-----BEGIN " not in data:
        raise StartupError(f"{setting} {path}: not a PEM file")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The port's credentials, or None for plaintext (no `tls_cert`)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    cert = read_pem(settings.tls_cert, "tls_cert")
    key = read_pem(settings.tls_key, "tls_key")
    client_ca = None
    if settings.tls_client_ca is not None:
        client_ca = read_pem(settings.tls_client_ca, "tls_client_ca")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
