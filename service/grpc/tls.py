"""Server TLS credentials from PEM files: TLS with `tls_cert` + `tls_key`, mutual TLS (clients
must present a certificate the CA signed) when `tls_client_ca` is set too.

The files are checked with the standard library's `ssl` before gRPC sees them: gRPC reports a key
that does not belong to the certificate only as "Failed to bind to address", which sends an
operator looking for a port conflict.
"""

from __future__ import annotations

import ssl
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


def check_files(cert: Path, key: Path, client_ca: Path | None) -> None:
    """StartupError (one line, naming the files, never their contents) unless the certificate
    and key parse and belong together and the client CA parses."""

    def no_password() -> bytes:  # never prompt on a terminal for an encrypted key
        raise StartupError(f"tls_key {key}: encrypted private keys are not supported")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise StartupError(f"tls_key {key} is not the private key of tls_cert {cert}") from None
        raise StartupError(
            f"tls_cert {cert} / tls_key {key}: not a usable certificate and key "
            f"({exc.reason or exc.__class__.__name__})"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            raise StartupError(
                f"tls_client_ca {client_ca}: not a usable CA certificate "
                f"({exc.reason or exc.__class__.__name__})"
            ) from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The port's credentials, or None for plaintext (no `tls_cert`)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    cert = read_pem(settings.tls_cert, "tls_cert")
    key = read_pem(settings.tls_key, "tls_key")
    client_ca = None
    if settings.tls_client_ca is not None:
        client_ca = read_pem(settings.tls_client_ca, "tls_client_ca")
    check_files(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
