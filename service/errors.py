"""Domain errors of the service core. They know no gRPC: `service/grpc/interceptors.py` maps each
to a status code in one place, so the core can be reused behind another transport."""

from __future__ import annotations

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
]


class ServiceError(Exception):
    """Base of the errors a request can meet; the message is safe to show to the client."""


class InvalidInput(ServiceError, ValueError):
    """The request is malformed: wrong shape, dtype, byte length, latent size, NaN/Inf, n <= 0."""


class LimitExceeded(ServiceError):
    """The request is well formed but over one of the server's configured limits."""


class Overloaded(ServiceError):
    """The queue in front of a graph is full; retrying later (or elsewhere) may succeed."""


class Unavailable(ServiceError):
    """The server is loading or draining; another replica can take the request."""


class DeadlineExpired(ServiceError):
    """The request's deadline passed while it waited, so it was dropped before computing."""


class Unauthenticated(ServiceError):
    """The call carries no valid credentials; the message never repeats what was sent."""


class StartupError(UserError, RuntimeError):
    """The server cannot start as configured (e.g. --require-gpu without a working GPU): one
    line from `vaeserve serve`, exit status 1."""

    exit_status = 1
