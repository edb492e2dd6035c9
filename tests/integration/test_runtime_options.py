"""The GPU path's settings on real servers (CPU only): float16 variants served and reported, a
model without them refused naming the export flag, I/O binding and padded buckets returning
exactly the plain bytes, and TensorRT asked for on a machine without a GPU falling back to the
CPU, in the log and in GetModelInfo."""

from __future__ import annotations

import logging
import subprocess
import sys

import grpc
import numpy as np
import pytest

from vaeserve.export.onnx_eval import cpu_session
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import SERVE_CODE, running_server

CPU = "CPUExecutionProvider"
Z = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
IMAGES = np.random.default_rng(1).random((5, 1, 12, 12), dtype=np.float32)


def info(target: str) -> pb.GetModelInfoResponse:
    with grpc.insecure_channel(target) as channel:
        return vae_pb2_grpc.VaeServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest())


def decode_and_encode(target: str) -> tuple[np.ndarray, np.ndarray]:
    with grpc.insecure_channel(target) as channel:
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        images = stub.Decode(pb.DecodeRequest(latents=to_tensor(Z)), timeout=30).images
        z_mean = stub.Encode(pb.EncodeRequest(images=to_tensor(IMAGES)), timeout=30).z_mean
    return to_array(images, "images"), to_array(z_mean, "z_mean")


def test_fp16_serves_the_float16_variants_and_reports_it(fp16_repository):
    folder = fp16_repository / "tiny" / "1"
    with (
        running_server(fp16_repository, providers="cpu", fp16=True) as half,
        running_server(fp16_repository, providers="cpu") as full,
    ):
        assert (info(half.target).precision, info(full.target).precision) == ("fp16", "fp32")
        served = {"fp16": decode_and_encode(half.target), "fp32": decode_and_encode(full.target)}
    for variant, suffix in (("fp16", ".fp16.onnx"), ("fp32", ".onnx")):
        images = cpu_session(folder / f"decoder{suffix}").run(None, {"z": Z})[0]
        z_mean = cpu_session(folder / f"encoder{suffix}").run(None, {"image": IMAGES})[0]
        np.testing.assert_allclose(served[variant][0], images, rtol=0, atol=1e-6)
        np.testing.assert_allclose(served[variant][1], z_mean, rtol=0, atol=1e-6)
    # The two variants really differ (by ~7e-6 to 3e-5 here: more than twice the 1e-6 the checks
    # above allow), so those checks tell them apart; and float16 stays within the parity
    # tolerance the exporter checks (5e-3 for pixels).
    gap = np.abs(served["fp16"][0] - served["fp32"][0]).max()
    assert 2e-6 < gap < 5e-3


def test_fp16_without_the_variants_is_refused_naming_the_export_flag(tiny_repository, tmp_path):
    port_file = tmp_path / "never.json"
    cmd = [
        sys.executable, "-c", SERVE_CODE, "serve", "--repository", str(tiny_repository),
        "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--providers", "cpu",
        "--port-file", str(port_file), "--fp16",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and not port_file.exists(), result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "no model version could be loaded" in last
    assert "has no encoder_fp16 (export it with vaeserve export --fp16)" in last
    assert "Traceback" not in result.stderr


def test_io_binding_and_buckets_on_the_cpu_give_the_same_bytes(tiny_repository):
    with (
        running_server(tiny_repository, providers="cpu", io_binding="on", buckets="on") as on,
        running_server(tiny_repository, providers="cpu", io_binding="off", buckets="off") as off,
        grpc.insecure_channel(on.target) as on_channel,
        grpc.insecure_channel(off.target) as off_channel,
    ):
        on_info, off_info = info(on.target), info(off.target)
        assert (on_info.io_binding, list(on_info.batch_buckets)) == (True, [1, 2, 4, 8, 16, 32])
        assert (off_info.io_binding, list(off_info.batch_buckets)) == (False, [])
        stubs = [vae_pb2_grpc.VaeServiceStub(c) for c in (on_channel, off_channel)]
        rng = np.random.default_rng(2)
        for n in (1, 3, 7, 32, 45):  # 45: split into 32 + 13, padded to 32 + 16
            z = to_tensor(rng.standard_normal((n, 3)).astype(np.float32))
            images = to_tensor(rng.random((n, 1, 12, 12), dtype=np.float32))
            decoded = [s.Decode(pb.DecodeRequest(latents=z), timeout=30) for s in stubs]
            assert decoded[0].images.data == decoded[1].images.data
            encoded = [s.Encode(pb.EncodeRequest(images=images), timeout=30) for s in stubs]
            assert encoded[0].z_mean.data == encoded[1].z_mean.data
            assert encoded[0].z_log_var.data == encoded[1].z_log_var.data
            sampled = [s.Sample(pb.SampleRequest(n=n, seed=n), timeout=30) for s in stubs]
            assert sampled[0].images.data == sampled[1].images.data
            assert len(decoded[0].images.data) == n * 12 * 12 * 4


def test_tensorrt_without_a_gpu_falls_back_to_the_cpu(tiny_repository, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="vaeserve.service.runtime")
    settings = {"providers": "cuda,cpu", "tensorrt": True, "tensorrt_cache_dir": tmp_path}
    with running_server(tiny_repository, **settings) as srv:
        reply = info(srv.target)
        if not reply.gpu_fallback:
            pytest.skip(f"a GPU works here: {list(reply.providers)}")
        images, _ = decode_and_encode(srv.target)
    assert list(reply.providers) == [CPU] and reply.gpu_fallback
    assert list(reply.requested_providers) == ["cuda", "cpu"] and reply.tensorrt_requested
    assert (reply.precision, reply.io_binding, list(reply.batch_buckets)) == ("fp32", False, [])
    assert images.shape == (5, 1, 12, 12)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("tiny v1: CUDA was requested but ONNX Runtime runs on" in m for m in warnings)
    assert any("tiny v1: TensorRT was requested but is not active" in m for m in warnings)
