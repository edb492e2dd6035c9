"""The google.rpc error details of a failed call, read into plain values: the ErrorInfo reason
a program branches on, the fields to fix, and how long to wait when retrying helps.

Any grpcio error (`grpc.RpcError` from a stub or `VaeClient`) can be read; a status without
details (e.g. one from the transport: a message over the size limit) gives empty values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class ErrorDetails:
    """What a vaeserve status says beyond its code and message (docs/service.md#errors)."""

    reason: str = ""  # ErrorInfo.reason, e.g. "QUEUE_FULL"; "" when the status has none
    domain: str = ""  # ErrorInfo.domain, "vaeserve.v1"
    metadata: dict[str, str] = field(default_factory=dict)  # e.g. {"limit": "max_sample_n"}
    field_violations: list[error_details_pb2.BadRequest.FieldViolation] = field(
        default_factory=list
    )
    retry_delay: float | None = None  # RetryInfo, seconds; None: retrying the same call fails
    status: status_pb2.Status | None = None  # the whole google.rpc.Status, for anything else


def error_details(exc: grpc.RpcError) -> ErrorDetails:
    """The details the server attached to `exc` (empty values when it attached none)."""
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except (AttributeError, ValueError):  # not a call, or trailers that disagree with it
        status = None
    if status is None:
        return ErrorDetails()
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    retry = error_details_pb2.RetryInfo()
    found_info = found_retry = False
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            found_info = detail.Unpack(info)
        elif detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
        elif detail.Is(retry.DESCRIPTOR):
            found_retry = detail.Unpack(retry)
    return ErrorDetails(
        reason=info.reason if found_info else "",
        domain=info.domain if found_info else "",
        metadata=dict(info.metadata),
        field_violations=list(bad.field_violations),
        retry_delay=retry.retry_delay.ToTimedelta().total_seconds() if found_retry else None,
        status=status,
    )
