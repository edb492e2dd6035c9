"""The KServe V2 (Open Inference Protocol) service through the generated stubs: on the same port
as VaeService, the same numbers as Encode/Decode, and a clear status for every bad request."""

from __future__ import annotations

import re
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from vaeserve.inference import grpc_predict_v2_pb2 as v2
from vaeserve.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.v1 import vae_pb2 as pb

from .conftest import running_server

C, H, W, L = 1, 12, 12, 3  # the `tiny` model
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def v2stub(channel: grpc.Channel) -> v2_grpc.GRPCInferenceServiceStub:
    return v2_grpc.GRPCInferenceServiceStub(channel)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, C, H, W), dtype=np.float32)


def infer(
    model: str, name: str, x: np.ndarray, datatype: str = "FP32", **kw
) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model, **kw)
    request.inputs.add(name=name, datatype=datatype, shape=list(x.shape))
    request.raw_input_contents.append(np.ascontiguousarray(x).tobytes())
    return request


def outputs(reply: v2.ModelInferResponse) -> dict[str, np.ndarray]:
    return {
        out.name: np.frombuffer(raw, dtype="<f4").reshape(list(out.shape))
        for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }


def refused(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


def test_health_and_server_metadata(v2stub):
    assert v2stub.ServerLive(v2.ServerLiveRequest(), timeout=10).live
    assert v2stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready
    meta = v2stub.ServerMetadata(v2.ServerMetadataRequest(), timeout=10)
    assert meta.name == "vaeserve" and meta.version


@pytest.mark.parametrize(
    ("name", "version", "ready"),
    [
        ("tiny-encoder", "", True),
        ("tiny-decoder", "1", True),
        ("decoder", "", True),  # the default model's
        ("tiny-decoder", "2", False),
        ("nope-decoder", "", False),
        ("tiny", "", False),
        ("tiny-encoder", "x", False),
    ],
)
def test_model_ready(v2stub, name, version, ready):
    reply = v2stub.ModelReady(v2.ModelReadyRequest(name=name, version=version), timeout=10)
    assert reply.ready is ready


def test_model_metadata_has_the_graphs_tensors(v2stub):
    enc = v2stub.ModelMetadata(v2.ModelMetadataRequest(name="tiny-encoder"), timeout=10)
    assert (enc.name, list(enc.versions), enc.platform) == (
        "tiny-encoder",
        ["1"],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in enc.inputs] == [
        ("image", "FP32", [-1, C, H, W])
    ]
    assert [(t.name, list(t.shape)) for t in enc.outputs] == [
        ("z_mean", [-1, L]),
        ("z_log_var", [-1, L]),
    ]
    dec = v2stub.ModelMetadata(v2.ModelMetadataRequest(name="decoder", version="1"), timeout=10)
    assert dec.name == "tiny-decoder"
    assert [(t.name, list(t.shape)) for t in dec.inputs] == [("z", [-1, L])]
    assert [(t.name, list(t.shape)) for t in dec.outputs] == [("image", [-1, C, H, W])]


def test_model_config_for_perf_analyzer(v2stub):
    """Triton's ModelConfig extension: dims without the batch axis, max_images_per_request rows."""
    config = v2stub.ModelConfig(v2.ModelConfigRequest(name="tiny-decoder"), timeout=10).config
    assert (config.name, config.platform, config.max_batch_size) == (
        "tiny-decoder",
        "onnxruntime_onnx",
        100,
    )
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("z", v2.TYPE_FP32, [L])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("image", [C, H, W])]
    error = refused(v2stub.ModelConfig, v2.ModelConfigRequest(name="nope-encoder"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_encoder_equals_encode(v2stub, stub):
    x = images(5)
    want = stub.Encode(pb.EncodeRequest(images=to_tensor(x)), timeout=10)
    reply = v2stub.ModelInfer(infer("tiny-encoder", "image", x, id="req-7"), timeout=10)
    assert (reply.model_name, reply.model_version, reply.id) == ("tiny-encoder", "1", "req-7")
    got = outputs(reply)
    assert np.array_equal(got["z_mean"], to_array(want.z_mean, "z_mean"))
    assert np.array_equal(got["z_log_var"], to_array(want.z_log_var, "z_log_var"))


def test_encoder_takes_uint8_raw_and_typed(v2stub, stub):
    x8 = (images(3, seed=4) * 255).astype(np.uint8)
    want = to_array(stub.Encode(pb.EncodeRequest(images=to_tensor(x8)), timeout=10).z_mean, "z")
    raw = outputs(v2stub.ModelInfer(infer("tiny-encoder", "image", x8, "UINT8"), timeout=10))
    typed_request = v2.ModelInferRequest(model_name="encoder")
    typed_request.inputs.add(
        name="image",
        datatype="UINT8",
        shape=list(x8.shape),
        contents=v2.InferTensorContents(uint_contents=x8.ravel().tolist()),
    )
    typed_request.outputs.add(name="z_mean")
    typed = outputs(v2stub.ModelInfer(typed_request, timeout=10))
    assert list(typed) == ["z_mean"]  # only what was asked for
    assert np.array_equal(raw["z_mean"], want) and np.array_equal(typed["z_mean"], want)


def test_decoder_equals_decode_raw_and_typed(v2stub, stub):
    z = np.random.default_rng(3).standard_normal((7, L), dtype=np.float32)
    want = to_array(stub.Decode(pb.DecodeRequest(latents=to_tensor(z)), timeout=10).images, "i")
    raw = outputs(v2stub.ModelInfer(infer("tiny-decoder", "z", z, model_version="1"), timeout=10))
    typed_request = v2.ModelInferRequest(model_name="tiny-decoder")
    typed_request.inputs.add(
        name="z",
        datatype="FP32",
        shape=[7, L],
        contents=v2.InferTensorContents(fp32_contents=z.ravel().tolist()),
    )
    typed = outputs(v2stub.ModelInfer(typed_request, timeout=10))
    assert raw["image"].shape == (7, C, H, W)
    assert np.array_equal(raw["image"], want) and np.array_equal(typed["image"], want)


def _both(z: np.ndarray) -> v2.ModelInferRequest:
    request = infer("tiny-decoder", "z", z)
    request.inputs[0].contents.fp32_contents.extend(z.ravel().tolist())
    return request


def _no_input() -> v2.ModelInferRequest:
    return v2.ModelInferRequest(model_name="tiny-decoder")


def _typed_short(z: np.ndarray) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="tiny-decoder")
    request.inputs.add(
        name="z", datatype="FP32", shape=[2, L], contents=v2.InferTensorContents(fp32_contents=[1])
    )
    return request


def _bad_output(z: np.ndarray) -> v2.ModelInferRequest:
    request = infer("tiny-decoder", "z", z)
    request.outputs.add(name="logits")
    return request


Z = np.zeros((2, L), dtype=np.float32)
BAD = {
    "unknown model": (infer("nope-decoder", "z", Z), grpc.StatusCode.NOT_FOUND, "unknown model"),
    "not a V2 name": (infer("tiny", "z", Z), grpc.StatusCode.NOT_FOUND, "NAME-encoder"),
    "unknown version": (
        infer("tiny-decoder", "z", Z, model_version="9"),
        grpc.StatusCode.NOT_FOUND,
        "no version 9",
    ),
    "bad version": (infer("tiny-decoder", "z", Z, model_version="v1"), INVALID, "model_version"),
    "wrong input name": (infer("tiny-decoder", "x" * 5000, Z), INVALID, "inputs[0].name"),
    "wrong datatype": (
        infer("tiny-decoder", "z", Z.astype(np.float64), "FP64"),
        INVALID,
        "datatype",
    ),
    "uint8 latents": (infer("tiny-decoder", "z", Z.astype(np.uint8), "UINT8"), INVALID, "FP32"),
    "missing input": (_no_input(), INVALID, "inputs: missing"),
    "raw and typed": (_both(Z), INVALID, "one or the other"),
    "typed count": (_typed_short(Z), INVALID, "fp32_contents"),
    "wrong shape": (
        infer("tiny-decoder", "z", np.zeros((2, 5), np.float32)),
        INVALID,
        "latent_dim",
    ),
    "wrong image shape": (
        infer("tiny-encoder", "image", np.zeros((1, 1, 5, 5), np.float32)),
        INVALID,
        "shape",
    ),
    "pixels out of range": (infer("tiny-encoder", "image", images(1) + 2), INVALID, "[0, 1]"),
    "unknown output": (_bad_output(Z), INVALID, "outputs[0].name"),
    "NaN latents": (
        infer("tiny-decoder", "z", np.full((1, L), np.nan, np.float32)),
        INVALID,
        "NaN",
    ),
}


def _bytes_vs_shape() -> v2.ModelInferRequest:
    request = infer("tiny-decoder", "z", Z)
    request.inputs[0].shape[:] = [3, L]
    return request


BAD["bytes vs shape"] = (_bytes_vs_shape(), INVALID, "raw_input_contents[0]")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_requests_get_a_clear_status(v2stub, case):
    request, code, words = BAD[case]
    error = refused(v2stub.ModelInfer, request)
    assert error.code() == code, error.details()
    assert words in error.details()
    assert len(error.details()) <= 1000


def test_over_the_row_limit_is_resource_exhausted(v2stub):
    error = refused(v2stub.ModelInfer, infer("tiny-decoder", "z", np.zeros((101, L), np.float32)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_images_per_request" in error.details()


def test_undecodable_body_is_invalid_argument(channel):
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff", timeout=10)
    assert info.value.code() == INVALID
    assert "inference.ModelInferRequest" in info.value.details()


def test_counted_in_the_request_metrics_and_token_checked(tiny_repository, tmp_path):
    """One token, one admission, one metrics registry for both services."""
    token = tmp_path / "token"
    token.write_text("s3cret-token-value\n")
    bearer = (("authorization", "Bearer s3cret-token-value"),)
    with (
        running_server(tiny_repository, auth_token_file=token) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        error = refused(stub.ModelInfer, infer("tiny-decoder", "z", Z))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.ModelInfer(infer("tiny-decoder", "z", Z), timeout=10, metadata=bearer)
        assert outputs(reply)["image"].shape == (2, C, H, W)
        text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    counted = {
        code: line.rsplit(" ", 1)[1]
        for line in text.splitlines()
        if line.startswith("vaeserve_requests_total{") and 'method="ModelInfer"' in line
        for code in re.findall(r'code="(\w+)"', line)
    }
    assert counted == {"OK": "1.0", "UNAUTHENTICATED": "1.0"}, counted


def test_reflection_lists_the_v2_service(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    assert "inference.GRPCInferenceService" in database.get_services()


def test_the_probes_answer_while_draining_and_inference_does_not(tiny_repository):
    """ServerLive and ServerReady are probes, as the health service is: a draining server is
    live and not ready, while ModelInfer is refused (UNAVAILABLE, retry elsewhere)."""
    with running_server(tiny_repository) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready
        assert srv.server is not None
        srv.server.state.draining = True
        try:
            assert stub.ServerLive(v2.ServerLiveRequest(), timeout=10).live
            assert not stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready
            z = np.zeros((1, L), np.float32)
            error = refused(stub.ModelInfer, infer("tiny-decoder", "z", z))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            srv.server.state.draining = False
