"""Bad requests: each gets the right status code and a message that says what was wrong, and
the server keeps serving. Plus the limits that need their own server: a full queue, deadlines."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vaeserve.service.grpc.tensors import to_tensor
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import running_server
from .test_service_rpcs import scrape

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

F32, U8 = pb.DTYPE_FLOAT32, pb.DTYPE_UINT8


def raw(shape: list[int], dtype: int = F32, data: bytes | None = None) -> pb.Tensor:
    size = int(np.prod(shape)) * (4 if dtype == F32 else 1)
    return pb.Tensor(shape=shape, dtype=dtype, data=b"\0" * size if data is None else data)


def imgs(array: np.ndarray) -> pb.EncodeRequest:
    return pb.EncodeRequest(images=to_tensor(array))


def lat(array: np.ndarray) -> pb.DecodeRequest:
    return pb.DecodeRequest(latents=to_tensor(array))


nan_images = np.zeros((2, 1, 12, 12), np.float32)
nan_images[1, 0, 3, 4] = np.nan
inf_latents = np.zeros((2, 3), np.float32)
inf_latents[0, 1] = np.inf

# (id, method, request, code, a piece of the message)
CASES = [
    ("images missing", "Encode", pb.EncodeRequest(), INVALID, "images: missing"),
    ("dtype unspecified", "Encode", pb.EncodeRequest(images=raw([1, 1, 12, 12], 0)), INVALID,
     "DTYPE_UNSPECIFIED"),
    ("dtype unknown", "Encode", pb.EncodeRequest(images=raw([1, 1, 12, 12], 9)), INVALID,
     "dtype 9"),
    ("byte length short", "Encode",
     pb.EncodeRequest(images=raw([2, 1, 12, 12], F32, b"\0" * 100)), INVALID,
     "needs 1152 bytes of data, got 100"),
    ("huge shape, little data", "Encode",
     pb.EncodeRequest(images=raw([2**40, 1, 12, 12], F32, b"\0" * 8)), INVALID, "bytes of data"),
    ("negative dimension", "Encode", pb.EncodeRequest(images=raw([-1, 1, 12, 12], F32, b"")),
     INVALID, "each >= 0"),
    ("wrong rank", "Encode", imgs(np.zeros((2, 12, 12), np.float32)), INVALID, "[N, 1, 12, 12]"),
    ("wrong image size", "Encode", imgs(np.zeros((1, 1, 28, 28), np.float32)), INVALID,
     "shape [1, 1, 28, 28]"),
    ("wrong channels", "Encode", imgs(np.zeros((1, 3, 12, 12), np.uint8)), INVALID,
     "(N, channels, height, width)"),
    ("zero images", "Encode", imgs(np.zeros((0, 1, 12, 12), np.float32)), INVALID,
     "need at least 1"),
    ("NaN pixel", "Encode", imgs(nan_images), INVALID,
     "NaN or infinite (first at index [1, 0, 3, 4])"),
    ("pixel out of [0, 1]", "Encode", imgs(np.full((1, 1, 12, 12), 2.0, np.float32)), INVALID,
     "must be in [0, 1]"),
    ("too many images", "Encode", imgs(np.zeros((101, 1, 12, 12), np.uint8)), EXHAUSTED,
     "max_images_per_request 100"),
    ("latents missing", "Decode", pb.DecodeRequest(), INVALID, "latents: missing"),
    ("wrong latent size", "Decode", lat(np.zeros((4, 2), np.float32)), INVALID,
     "latent_dim 3"),
    ("latents 1-D", "Decode", lat(np.zeros(3, np.float32)), INVALID, "need [N, 3]"),
    ("uint8 latents", "Decode", lat(np.zeros((1, 3), np.uint8)), INVALID, "need float32"),
    ("infinite latent", "Decode", lat(inf_latents), INVALID, "NaN or infinite"),
    ("too many latents", "Decode", lat(np.zeros((101, 3), np.float32)), EXHAUSTED,
     "max_images_per_request"),
    ("unknown image format", "Decode",
     pb.DecodeRequest(latents=to_tensor(np.zeros((1, 3), np.float32)), format=7), INVALID,
     "unknown ImageFormat value 7"),
    ("n = 0", "Sample", pb.SampleRequest(n=0), INVALID, "n: got 0"),
    ("n over max_sample_n", "Sample", pb.SampleRequest(n=201), EXHAUSTED,
     "limit of 200 for Sample; use SampleStream"),
    ("response over message size", "Sample", pb.SampleRequest(n=200, seed=1), EXHAUSTED,
     "over max_message_bytes"),
    ("negative temperature", "Sample", pb.SampleRequest(n=1, temperature=-1.0), INVALID,
     "temperature: got -1.0"),
    ("NaN temperature", "Sample", pb.SampleRequest(n=1, temperature=float("nan")), INVALID,
     "temperature"),
    ("offset overflow", "Sample", pb.SampleRequest(n=2, offset=2**64 - 1), INVALID, "2**63"),
    ("stream n = 0", "SampleStream", pb.SampleRequest(n=0), INVALID, "n: got 0"),
    ("stream n over max_stream_n", "SampleStream", pb.SampleRequest(n=5001), EXHAUSTED,
     "limit of 5000 for SampleStream"),
    ("unknown model", "Sample", pb.SampleRequest(model="nope", n=1), NOT_FOUND,
     "unknown model 'nope'; this server has ['tiny']"),
    ("unknown version", "Decode",
     pb.DecodeRequest(version=7, latents=to_tensor(np.zeros((1, 3), np.float32))), NOT_FOUND,
     "has no version 7"),
    ("info of unknown model", "GetModelInfo", pb.GetModelInfoRequest(model="x"), NOT_FOUND,
     "unknown model 'x'"),
]  # fmt: skip


def call(stub: vae_pb2_grpc.VaeServiceStub, method: str, request, timeout: float = 10):
    rpc = getattr(stub, method)
    if method == "SampleStream":
        return list(rpc(request, timeout=timeout))
    return rpc(request, timeout=timeout)


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_request(stub, method, request_, code, message):
    with pytest.raises(grpc.RpcError) as err:
        call(stub, method, request_)
    assert err.value.code() == code, err.value.details()
    assert message in err.value.details()


def test_still_healthy_and_correct_after_the_bad_requests(stub, channel, server):
    for _name, method, request, _code, _message in CASES:
        with pytest.raises(grpc.RpcError):
            call(stub, method, request)
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="vaeserve.v1.VaeService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert stub.Sample(pb.SampleRequest(n=3, seed=1), timeout=10).images.shape == [3, 1, 12, 12]
    metrics = scrape(server.metrics_url)
    assert metrics.get('vaeserve_requests_total{code="INTERNAL",method="Encode"}', 0) == 0


def test_message_over_the_receive_limit_is_refused_by_the_transport(server):
    options = [("grpc.max_send_message_length", 1 << 22)]
    with grpc.insecure_channel(server.target, options=options) as ch:
        big = np.zeros((100, 1, 64, 64), np.float32)  # 1.6 MB > 100 kB
        with pytest.raises(grpc.RpcError) as err:
            vae_pb2_grpc.VaeServiceStub(ch).Encode(imgs(big), timeout=10)
    assert err.value.code() == EXHAUSTED


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@pytest.mark.slow
def test_full_queue_and_expired_deadlines(tiny_repository):
    """A batch waits 3 s for company and the queue holds 2 pieces: a third concurrent request
    is refused at once (UNAVAILABLE, unlike a fixed limit), and one whose deadline passes while
    queued is dropped, not computed."""
    labels = 'graph="decoder",model="tiny",version="1"'
    with running_server(
        tiny_repository, max_delay_ms=3000.0, max_queue=2, batch_wait_when_idle=True
    ) as srv:
        with grpc.insecure_channel(srv.target) as ch:
            stub = vae_pb2_grpc.VaeServiceStub(ch)
            ok = stub.Sample.future(pb.SampleRequest(n=1, seed=2), timeout=60)
            short = stub.Sample.future(pb.SampleRequest(n=1, seed=1), timeout=1.0)
            depth = f"vaeserve_queue_depth{{{labels}}}"
            wait_for(lambda: scrape(srv.metrics_url).get(depth) == 2)
            with pytest.raises(grpc.RpcError) as err:
                stub.Sample(pb.SampleRequest(n=1, seed=3), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # overload: retry soon
            assert "queue full" in err.value.details()
            with pytest.raises(grpc.RpcError) as late:
                short.result()
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert ok.result().images.shape == [1, 1, 12, 12]
        metrics = scrape(srv.metrics_url)
    dropped = sum(
        v
        for k, v in metrics.items()
        if k.startswith("vaeserve_dropped_total{") and 'graph="decoder"' in k
    )
    assert dropped == 1
    assert metrics[f"vaeserve_rejected_total{{{labels}}}"] == 1
    assert metrics[f"vaeserve_batch_size_sum{{{labels}}}"] == 1  # only `ok` was computed
