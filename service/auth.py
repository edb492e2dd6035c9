"""Bearer-token authentication, transport-free: the interceptor hands it the request metadata.

The token is read once from a file (so it never appears in flags, the environment dump of the
settings, or the process list), compared in constant time, and never logged or echoed.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path

from vaeserve.service.errors import StartupError, Unauthenticated

HEADER = "authorization"
SCHEME = "bearer "


def read_token(path: Path) -> bytes:
    """The token in `path`, surrounding whitespace removed; StartupError if unusable."""
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise StartupError(f"auth_token_file {path}: cannot read it ({exc.strerror})") from None
    if not token:
        raise StartupError(f"auth_token_file {path}: the file is empty")
    if any(b < 0x21 or b > 0x7E for b in token):
        raise StartupError(
            f"auth_token_file {path}: the token must be printable ASCII without spaces"
        )
    return token


class TokenAuth:
    """Checks `authorization: Bearer <token>` against the one configured token."""

    def __init__(self, token: bytes) -> None:
        self._token = token

    def __repr__(self) -> str:  # never show the token, even in a debugger or a log of objects
        return "TokenAuth(<redacted>)"

    def check(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        """Raise Unauthenticated unless the metadata carries the right bearer token."""
        values = [v for k, v in metadata or () if k.lower() == HEADER]
        if not values:
            raise Unauthenticated("missing credentials: send 'authorization: Bearer <token>'")
        value = values[0]
        raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
        if len(values) != 1 or raw[: len(SCHEME)].lower() != SCHEME.encode():
            raise Unauthenticated("malformed credentials: send 'authorization: Bearer <token>'")
        if not hmac.compare_digest(raw[len(SCHEME) :].strip(), self._token):
            raise Unauthenticated("invalid bearer token")
