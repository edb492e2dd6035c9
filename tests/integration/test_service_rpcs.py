"""Every RPC through the generated stubs against a real server, checked against ONNX Runtime
run directly on the same inputs."""

from __future__ import annotations

import io
import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from PIL import Image

from vaeserve.export.onnx_eval import cpu_session
from vaeserve.imaging import to_uint8
from vaeserve.service import rng
from vaeserve.service.cuda_probe import cuda_usable
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.service.repository import sha256_file
from vaeserve.v1 import vae_pb2 as pb

ATOL = 1e-5  # ORT in-process vs ORT in the server: same graph, same provider, same threads


@pytest.fixture(scope="module")
def direct(tiny_repository: Path):
    """The graphs run directly with ONNX Runtime: (encode(x) -> [mean, logvar], decode(z))."""
    enc = cpu_session(tiny_repository / "tiny" / "1" / "encoder.onnx")
    dec = cpu_session(tiny_repository / "tiny" / "1" / "decoder.onnx")
    return (
        lambda x: enc.run(None, {"image": x}),
        lambda z: dec.run(None, {"z": z})[0],
    )


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 12, 12), dtype=np.float32)


def test_encode_matches_onnxruntime(stub, direct):
    x = images(7)
    reply = stub.Encode(pb.EncodeRequest(images=to_tensor(x)), timeout=10)
    mean, logvar = direct[0](x)
    np.testing.assert_allclose(to_array(reply.z_mean, "m"), mean, atol=ATOL)
    np.testing.assert_allclose(to_array(reply.z_log_var, "v"), logvar, atol=ATOL)
    assert not reply.HasField("z") and (reply.model, reply.version) == ("tiny", 1)


def test_encode_uint8_and_sampled_z(stub, direct):
    x8 = to_uint8(images(5, seed=1))
    reply = stub.Encode(pb.EncodeRequest(images=to_tensor(x8), sample=True, seed=11), timeout=10)
    mean, logvar = direct[0](x8.astype(np.float32) / np.float32(255))
    np.testing.assert_allclose(to_array(reply.z_mean, "m"), mean, atol=ATOL)
    eps = rng.normal_rows(11, 0, 5, 3)
    expected = mean + np.exp(0.5 * logvar) * eps
    np.testing.assert_allclose(to_array(reply.z, "z"), expected, atol=1e-4)
    assert reply.seed == 11


def test_decode_matches_onnxruntime_in_every_format(stub, direct):
    z = np.random.default_rng(2).standard_normal((9, 3)).astype(np.float32)
    want = direct[1](z)
    f32 = stub.Decode(pb.DecodeRequest(latents=to_tensor(z)), timeout=10)
    np.testing.assert_allclose(to_array(f32.images, "i"), want, atol=ATOL)
    u8 = stub.Decode(
        pb.DecodeRequest(latents=to_tensor(z), format=pb.IMAGE_FORMAT_UINT8), timeout=10
    )
    got8 = to_array(u8.images, "i")
    assert got8.dtype == np.uint8 and np.abs(got8.astype(int) - to_uint8(want)).max() <= 1
    png = stub.Decode(
        pb.DecodeRequest(latents=to_tensor(z), format=pb.IMAGE_FORMAT_PNG), timeout=10
    )
    assert len(png.encoded) == 9 and not png.HasField("images")
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b)))[None] for b in png.encoded])
    np.testing.assert_array_equal(decoded, got8)


def test_sample_is_seeded_decoded_prior(stub, direct):
    request = pb.SampleRequest(n=10, seed=1234, temperature=0.5)
    first = stub.Sample(request, timeout=10)
    again = stub.Sample(request, timeout=10)
    assert first.images.data == again.images.data and first.latents.data == again.latents.data
    latents = to_array(first.latents, "z")
    np.testing.assert_array_equal(latents, rng.normal_rows(1234, 0, 10, 3) * np.float32(0.5))
    np.testing.assert_allclose(to_array(first.images, "i"), direct[1](latents), atol=ATOL)
    other = stub.Sample(pb.SampleRequest(n=10, seed=1235), timeout=10)
    assert other.images.data != first.images.data


def test_sample_without_seed_returns_the_seed_it_used(stub):
    reply = stub.Sample(pb.SampleRequest(n=3), timeout=10)
    replay = stub.Sample(pb.SampleRequest(n=3, seed=reply.seed), timeout=10)
    assert replay.images.data == reply.images.data


def test_temperature_zero_is_the_decoded_prior_mean(stub, direct):
    reply = stub.Sample(pb.SampleRequest(n=2, seed=1, temperature=0.0), timeout=10)
    assert not to_array(reply.latents, "z").any()
    np.testing.assert_allclose(
        to_array(reply.images, "i"), direct[1](np.zeros((2, 3), np.float32)), atol=ATOL
    )


def test_stream_equals_unary_and_resumes_at_any_offset(stub):
    unary = stub.Sample(pb.SampleRequest(n=150, seed=9, format=pb.IMAGE_FORMAT_UINT8), timeout=10)
    chunks = list(
        stub.SampleStream(
            pb.SampleRequest(n=150, seed=9, format=pb.IMAGE_FORMAT_UINT8, chunk_size=40),
            timeout=10,
        )
    )
    assert [len(c.latents.data) // 12 for c in chunks] == [32, 32, 32, 32, 22]  # max_batch_size
    assert [c.offset for c in chunks] == [0, 32, 64, 96, 128]
    streamed = np.concatenate([to_array(c.images, "i") for c in chunks])
    np.testing.assert_array_equal(streamed, to_array(unary.images, "i"))
    tail = stub.Sample(
        pb.SampleRequest(n=50, seed=9, offset=100, format=pb.IMAGE_FORMAT_UINT8), timeout=10
    )
    np.testing.assert_array_equal(to_array(tail.images, "i"), streamed[100:])


def test_stream_chunks_fit_the_message_limit(stub, server):
    # float32 12x12 images with latents: 588 bytes each; 100 kB holds ~160 per message, but
    # chunks never exceed max_batch_size (32), and n can go far past the unary limit (200).
    chunks = list(stub.SampleStream(pb.SampleRequest(n=1000, seed=1), timeout=30))
    assert sum(c.images.shape[0] for c in chunks) == 1000
    assert max(c.ByteSize() for c in chunks) < server.settings.max_message_bytes


def test_get_model_info(stub, tiny_repository):
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert (info.name, info.version, info.latent_dim) == ("tiny", 1, 3)
    assert list(info.image_shape) == [1, 12, 12]
    assert info.encoder_sha256 == sha256_file(tiny_repository / "tiny/1/encoder.onnx")
    assert info.decoder_sha256 == sha256_file(tiny_repository / "tiny/1/decoder.onnx")
    assert info.providers[-1] == "CPUExecutionProvider"
    usable, _ = cuda_usable()  # the default providers, "auto", ask for CUDA only where usable
    assert list(info.requested_providers) == (["cuda", "cpu"] if usable else ["cpu"])
    assert info.gpu_fallback == (usable and "CUDAExecutionProvider" not in info.providers)
    assert info.limits.max_sample_n == 200 and info.limits.max_batch_size == 32
    assert [(m.name, m.version) for m in info.models] == [("tiny", 1)]
    assert json.loads(info.metadata_json)["latent_dim"] == 3
    assert info.threads >= 1


def test_named_model_and_version(stub):
    reply = stub.Sample(pb.SampleRequest(model="tiny", version=1, n=1, seed=0), timeout=10)
    assert (reply.model, reply.version) == ("tiny", 1)


def test_concurrent_mixed_requests_each_get_their_own_answer(stub, direct, server):
    """200 concurrent calls of mixed sizes and kinds: batching merges them (batch sizes > 1 in
    the metrics) but never mixes rows up."""
    gen = np.random.default_rng(42)
    jobs = []
    for i in range(200):
        n = int(gen.integers(1, 70))  # up to 69 rows: over max_batch_size, so some are split
        if i % 3 == 0:
            jobs.append(("encode", images(n, seed=i)))
        elif i % 3 == 1:
            jobs.append(("decode", gen.standard_normal((n, 3)).astype(np.float32)))
        else:
            jobs.append(("sample", (n, 1000 + i)))

    def call(job):
        kind, arg = job
        if kind == "encode":
            return stub.Encode.future(pb.EncodeRequest(images=to_tensor(arg)), timeout=60)
        if kind == "decode":
            return stub.Decode.future(pb.DecodeRequest(latents=to_tensor(arg)), timeout=60)
        return stub.Sample.future(pb.SampleRequest(n=arg[0], seed=arg[1]), timeout=60)

    merged = 'vaeserve_batch_requests_{}{{graph="decoder",model="tiny",version="1"}}'
    before = scrape(server.metrics_url)
    futures = [call(job) for job in jobs]  # all in flight at once
    for (kind, arg), future in zip(jobs, futures, strict=True):
        reply = future.result()
        if kind == "encode":
            np.testing.assert_allclose(to_array(reply.z_mean, "m"), direct[0](arg)[0], atol=ATOL)
        elif kind == "decode":
            np.testing.assert_allclose(to_array(reply.images, "i"), direct[1](arg), atol=ATOL)
        else:
            z = rng.normal_rows(arg[1], 0, arg[0], 3)
            np.testing.assert_array_equal(to_array(reply.latents, "z"), z)
            np.testing.assert_allclose(to_array(reply.images, "i"), direct[1](z), atol=ATOL)
    after = scrape(server.metrics_url)
    runs = after[merged.format("count")] - before.get(merged.format("count"), 0)
    pieces = after[merged.format("sum")] - before.get(merged.format("sum"), 0)
    assert pieces > runs  # some runs merged several requests


def test_threads_of_clients_in_parallel(stub, direct):
    def one(i: int) -> bool:
        z = np.full((i % 5 + 1, 3), i / 50, dtype=np.float32)
        reply = stub.Decode(pb.DecodeRequest(latents=to_tensor(z)), timeout=30)
        return np.allclose(to_array(reply.images, "i"), direct[1](z), atol=ATOL)

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(one, range(64)))


def test_health_liveness_and_readiness(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "vaeserve.v1.VaeService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_service(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = db.get_services()
    assert "vaeserve.v1.VaeService" in services and "grpc.health.v1.Health" in services
    desc = db.FindFileContainingSymbol("vaeserve.v1.VaeService")
    assert desc.package == "vaeserve.v1"


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+(?:\{[^}]*\})?) (\S+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def test_metrics_counters_move(stub, server):
    key = 'vaeserve_requests_total{code="OK",method="GetModelInfo"}'
    before = scrape(server.metrics_url).get(key, 0.0)
    for _ in range(3):
        stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.Sample(pb.SampleRequest(n=0), timeout=10)
    after = scrape(server.metrics_url)
    assert after[key] == before + 3
    assert after['vaeserve_requests_total{code="INVALID_ARGUMENT",method="Sample"}'] >= 1
    assert after['vaeserve_request_latency_seconds_count{method="GetModelInfo"}'] >= 3
    decoder = 'graph="decoder",model="tiny",version="1"'
    assert after[f"vaeserve_batch_size_count{{{decoder}}}"] >= 1
    assert after[f"vaeserve_inference_seconds_count{{{decoder}}}"] >= 1
    assert after[f"vaeserve_queue_seconds_count{{{decoder}}}"] >= 1
    assert after["vaeserve_ready"] == 1
