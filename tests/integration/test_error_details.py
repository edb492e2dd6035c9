"""Every error the service returns carries google.rpc.Status details a program can act on:
ErrorInfo (a stable reason, domain vaeserve.v1) always, BadRequest with the field path for a
request to fix, RetryInfo only where retrying helps. Read from a real server with
`grpc_status.rpc_status.from_call`, as any gRPC client would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2

from vaeserve.service.client.errors import ErrorDetails, error_details
from vaeserve.service.grpc.tensors import to_tensor
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import running_server
from .reliability import wait_for
from .test_service_rpcs import scrape

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True)
class Seen:
    code: grpc.StatusCode
    details: ErrorDetails


def refused(stub: vae_pb2_grpc.VaeServiceStub, method: str, request: object) -> Seen:
    """The status and details of a call that must fail."""
    with pytest.raises(grpc.RpcError) as err:
        reply = getattr(stub, method)(request, timeout=30)
        if method == "SampleStream":
            list(reply)
    return Seen(err.value.code(), error_details(err.value))


ZERO_LATENT = to_tensor(np.zeros((1, 3), np.float32))
NAN_IMAGES = np.zeros((1, 1, 12, 12), np.float32)
NAN_IMAGES[0, 0, 1, 1] = np.nan

# (id, method, request, reason, field path)
INVALID_CASES = [
    ("missing tensor", "Encode", pb.EncodeRequest(), "INVALID_TENSOR", "images"),
    ("unknown dtype", "Encode",
     pb.EncodeRequest(images=pb.Tensor(shape=[1, 1, 12, 12], dtype=9)), "INVALID_TENSOR",
     "images.dtype"),
    ("byte length", "Decode",
     pb.DecodeRequest(latents=pb.Tensor(shape=[1, 3], dtype=pb.DTYPE_FLOAT32, data=b"\0")),
     "INVALID_TENSOR", "latents.data"),
    ("wrong image shape", "Encode", pb.EncodeRequest(images=to_tensor(np.zeros((1, 1, 5, 5),
     np.uint8))), "INVALID_TENSOR", "images.shape"),
    ("no rows", "Decode", pb.DecodeRequest(latents=to_tensor(np.zeros((0, 3), np.float32))),
     "INVALID_TENSOR", "latents.shape"),
    ("NaN pixel", "Encode", pb.EncodeRequest(images=to_tensor(NAN_IMAGES)), "INVALID_TENSOR",
     "images.data"),
    ("uint8 latents", "Decode", pb.DecodeRequest(latents=to_tensor(np.zeros((1, 3), np.uint8))),
     "INVALID_TENSOR", "latents.dtype"),
    ("n = 0", "Sample", pb.SampleRequest(n=0), "INVALID_ARGUMENT", "n"),
    ("temperature", "Sample", pb.SampleRequest(n=1, temperature=-1), "INVALID_ARGUMENT",
     "temperature"),
    ("offset", "SampleStream", pb.SampleRequest(n=2, offset=2**64 - 1), "INVALID_ARGUMENT",
     "offset"),
    ("format", "Decode", pb.DecodeRequest(latents=ZERO_LATENT, format=7), "INVALID_ARGUMENT",
     "format"),
    ("interpolation end", "Interpolate",
     pb.InterpolateRequest(start_latent=ZERO_LATENT, end_latent=to_tensor(np.zeros((2, 3),
     np.float32)), steps=3), "INVALID_TENSOR", "end_latent.shape"),
    ("steps", "Interpolate",
     pb.InterpolateRequest(start_latent=ZERO_LATENT, end_latent=ZERO_LATENT, steps=1),
     "INVALID_ARGUMENT", "steps"),
    ("field read from the message", "Sample", pb.SampleRequest(n=1, concept="no-such"),
     "INVALID_ARGUMENT", "concept"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "request_", "reason", "field"),
    [c[1:] for c in INVALID_CASES],
    ids=[c[0] for c in INVALID_CASES],
)
def test_invalid_argument_names_the_field(stub, method, request_, reason, field):
    seen = refused(stub, method, request_)
    assert seen.code == INVALID
    assert (seen.details.reason, seen.details.domain) == (reason, "vaeserve.v1")
    assert [v.field for v in seen.details.field_violations] == [field]
    assert seen.details.field_violations[0].description  # the status message, what was wrong
    assert seen.details.retry_delay is None  # the same request fails again


def test_a_body_protobuf_cannot_parse_blames_the_whole_request(channel):
    decode = channel.unary_unary("/vaeserve.v1.VaeService/Decode")  # raw bytes in and out
    with pytest.raises(grpc.RpcError) as err:
        decode(b"\xff\xff\xff", timeout=10)
    details = error_details(err.value)
    assert err.value.code() == INVALID
    assert details.reason == "MALFORMED_REQUEST"
    assert [v.field for v in details.field_violations] == [""]


@pytest.mark.parametrize(
    ("request_", "limit", "field"),
    [
        (pb.SampleRequest(n=201), "max_sample_n", "n"),
        (pb.SampleRequest(n=200, seed=1), "max_message_bytes", ""),
    ],
    ids=["n over max_sample_n", "response over max_message_bytes"],
)
def test_over_a_fixed_limit_is_resource_exhausted_and_not_retryable(stub, request_, limit, field):
    seen = refused(stub, "Sample", request_)
    assert seen.code == EXHAUSTED
    assert seen.details.reason == "OVER_LIMIT"
    assert seen.details.metadata == {"limit": limit}
    assert [v.field for v in seen.details.field_violations] == [field]
    assert seen.details.retry_delay is None


def test_too_many_images_blames_the_images(stub):
    request = pb.EncodeRequest(images=to_tensor(np.zeros((101, 1, 12, 12), np.uint8)))
    seen = refused(stub, "Encode", request)
    assert (seen.code, seen.details.reason) == (EXHAUSTED, "OVER_LIMIT")
    assert seen.details.metadata == {"limit": "max_images_per_request"}
    assert [v.field for v in seen.details.field_violations] == ["images"]


def test_unknown_model_is_not_found_with_error_info(stub):
    seen = refused(stub, "GetModelInfo", pb.GetModelInfoRequest(model="nope"))
    assert seen.code == grpc.StatusCode.NOT_FOUND
    assert (seen.details.reason, seen.details.domain) == ("MODEL_NOT_FOUND", "vaeserve.v1")
    assert seen.details.field_violations == [] and seen.details.retry_delay is None


@pytest.fixture
def held(tiny_repository) -> Iterator:
    """A server whose batches wait 1.5 s for company, one queue slot per graph, two calls."""
    with (
        running_server(
            tiny_repository,
            max_delay_ms=1500.0,
            batch_wait_when_idle=True,
            max_queue=1,
            max_concurrent_requests=2,
        ) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        yield srv, vae_pb2_grpc.VaeServiceStub(channel)


def test_overload_is_unavailable_with_retry_info(held):
    srv, stub = held
    first = stub.Sample.future(pb.SampleRequest(n=1, seed=1), timeout=30)
    depth = 'vaeserve_queue_depth{graph="decoder",model="tiny",version="1"}'
    wait_for(lambda: scrape(srv.metrics_url).get(depth) == 1)
    queue_full = refused(stub, "Sample", pb.SampleRequest(n=1, seed=2))  # the queue holds one
    assert (queue_full.code, queue_full.details.reason) == (UNAVAILABLE, "QUEUE_FULL")
    assert queue_full.details.retry_delay is not None and queue_full.details.retry_delay > 0
    images = to_tensor(np.zeros((1, 1, 12, 12), np.uint8))
    second = stub.Encode.future(pb.EncodeRequest(images=images), timeout=30)  # encoder queue
    wait_for(lambda: scrape(srv.metrics_url)["vaeserve_in_flight_requests"] == 2)
    crowded = refused(stub, "GetModelInfo", pb.GetModelInfoRequest())
    assert (crowded.code, crowded.details.reason) == (UNAVAILABLE, "CONCURRENCY_LIMIT")
    assert crowded.details.retry_delay is not None and crowded.details.retry_delay > 0
    assert first.result().images.shape == [1, 1, 12, 12]
    assert second.result().z_mean.shape == [1, 3]


def test_loading_and_draining_are_unavailable_with_retry_info(tiny_repository):
    with (
        running_server(tiny_repository) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        state = srv.server.state
        found = {}
        for flag in ("ready", "draining"):
            srv.loop.call_soon_threadsafe(setattr, state, flag, flag == "draining")
            wait_for(lambda f=flag: getattr(state, f) is (f == "draining"))
            seen = refused(stub, "GetModelInfo", pb.GetModelInfoRequest())
            found[flag] = (seen.code, seen.details.reason, seen.details.retry_delay is not None)
            srv.loop.call_soon_threadsafe(setattr, state, flag, flag == "ready")
            wait_for(lambda f=flag: getattr(state, f) is (f == "ready"))
    assert found == {
        "ready": (UNAVAILABLE, "LOADING", True),
        "draining": (UNAVAILABLE, "SHUTTING_DOWN", True),
    }


def test_unauthenticated_has_a_reason_and_no_retry(tiny_repository, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with (
        running_server(tiny_repository, auth_token_file=token_file) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        seen = refused(vae_pb2_grpc.VaeServiceStub(channel), "Sample", pb.SampleRequest(n=1))
    assert (seen.code, seen.details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert seen.details.retry_delay is None and seen.details.field_violations == []


def test_an_internal_error_carries_only_its_log_id(tiny_repository, monkeypatch, caplog):
    """A bug (here a fault injected into the core) is INTERNAL; the details hold the reason and
    the id that finds the logged traceback, never the exception's text."""
    with (
        running_server(tiny_repository) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):

        def broken(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError("secret /internal/path")

        monkeypatch.setattr(srv.server.core, "describe", broken)
        with pytest.raises(grpc.RpcError) as err:
            vae_pb2_grpc.VaeServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    details = error_details(err.value)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert details.reason == "INTERNAL" and set(details.metadata) == {"error_id"}
    assert f"id {details.metadata['error_id']}" in err.value.details()
    raw = b"".join(v for k, v in err.value.trailing_metadata() if k.endswith("-bin"))
    assert b"secret" not in raw and "secret" not in err.value.details()
    assert details.status is not None
    for any_detail in details.status.details:
        assert any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)
