"""Domain errors of the service core. They know no gRPC: `service/grpc/interceptors.py` maps each
to a status code in one place, so the core can be reused behind another transport."""

from __future__ import annotations

import re

from vaeserve.errors import UserError
from vaeserve.service.repository import ModelNotFoundError, RepositoryError

__all__ = [
    "DeadlineExpired",
    "InvalidInput",
    "LimitExceeded",
    "ModelNotFoundError",
    "Overloaded",
    "RepositoryError",
    "ServiceError",
    "StartupError",
    "Unauthenticated",
    "Unavailable",
    "field_of",
]


# A message's leading field path: "images:", "inputs[0].shape:", "alphas[2]:".
FIELD_PREFIX = re.compile(r"([A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*):")


class ServiceError(Exception):
    """Base of the errors a request can meet; the message is safe to show to the client.

    `reason` is a stable UPPER_SNAKE name a program can act on (docs/service.md lists them),
    `retry_after_s` how long to wait before retrying when retrying helps (None: it does not).
    Both are plain values, so a transport maps them to its own error details."""

    reason = "INTERNAL"
    retry_after_s: float | None = None

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


def field_of(message: str) -> str:
    """The field a message starts with ("images: ..." -> "images"), "" when it names none."""
    match = FIELD_PREFIX.match(message)
    return match.group(1) if match else ""


class InvalidInput(ServiceError, ValueError):
    """The request is malformed: wrong shape, dtype, byte length, latent size, NaN/Inf, n <= 0.

    `field` is the path of the offending request field (`images.shape`, `alphas[2]`, "" for
    the request as a whole); without one it is read from the message's leading `field:`."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self, message: str, *, field: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.field = field_of(message) if field is None else field


class LimitExceeded(ServiceError):
    """The request is well formed but over one of the server's configured limits: retrying
    the same request never helps. `limit` names the setting, `field` the request field."""

    reason = "OVER_LIMIT"

    def __init__(self, message: str, *, limit: str, field: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.field = field_of(message) if field is None else field


class Overloaded(ServiceError):
    """The queue in front of a graph is full, or too many calls are in flight; retrying later
    (or elsewhere) may succeed. The request was not started."""

    reason = "QUEUE_FULL"
    retry_after_s = 0.1


class Unavailable(ServiceError):
    """The server is loading or draining; another replica can take the request."""

    reason = "SHUTTING_DOWN"
    retry_after_s = 0.1


class DeadlineExpired(ServiceError):
    """The request's deadline passed while it waited, so it was dropped before computing."""

    reason = "DEADLINE"


class Unauthenticated(ServiceError):
    """The call carries no valid credentials; the message never repeats what was sent."""

    reason = "UNAUTHENTICATED"


class StartupError(UserError, RuntimeError):
    """The server cannot start as configured (e.g. --require-gpu without a working GPU): one
    line from `vaeserve serve`, exit status 1."""

    exit_status = 1
