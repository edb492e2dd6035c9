"""KServe V2 gRPC client helpers for the Triton and MLServer peers, from the main venv.

tritonclient is not in the main venv (it would pull another protobuf), so the load generator
uses the V2 stubs vaeserve itself serves (`vaeserve.inference`, generated from
protos/inference/grpc_predict_v2.proto): one copy of the protocol in the repository.
"""

from __future__ import annotations

import math
import time
from types import ModuleType
from typing import Any

import numpy as np


def stubs() -> tuple[ModuleType, ModuleType]:
    """(grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc)."""
    from vaeserve.inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

    return grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc


def infer_request(model: str, input_name: str, output_name: str, x: np.ndarray) -> Any:
    """A ModelInferRequest carrying `x` (float32) as raw_input_contents."""
    pb, _ = stubs()
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name=input_name, datatype="FP32", shape=list(x.shape))
    req.outputs.add(name=output_name)
    req.raw_input_contents.append(np.ascontiguousarray(x, dtype="<f4").tobytes())
    return req


def output_array(reply: Any, rows: int, image_shape: tuple[int, ...]) -> np.ndarray:
    """The first output as a float32 array, refusing a reply of the wrong type, shape or size (so a
    broken peer cannot report fast nonsense)."""
    if not reply.outputs or not reply.raw_output_contents:
        raise ValueError("reply has no raw output")
    out = reply.outputs[0]
    shape = tuple(int(d) for d in out.shape)
    if out.datatype != "FP32" or shape != (rows, *image_shape):
        raise ValueError(f"reply is {out.datatype} {shape}, expected FP32 {(rows, *image_shape)}")
    data = reply.raw_output_contents[0]
    if len(data) != math.prod(shape) * 4:
        raise ValueError(f"reply has {len(data)} bytes for {shape}")
    return np.frombuffer(data, dtype="<f4").reshape(shape)


async def metadata_aio(stub: Any, model: str) -> tuple[str, str, int, tuple[int, ...]]:
    """(input name, output name, latent dim, image shape) from ModelMetadata; the shapes there
    lead with the batch dimension (-1)."""
    pb, _ = stubs()
    return _from_metadata(await stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=10))


def _from_metadata(meta: Any) -> tuple[str, str, int, tuple[int, ...]]:
    inp, out = meta.inputs[0], meta.outputs[0]
    return inp.name, out.name, int(inp.shape[-1]), tuple(int(d) for d in out.shape[1:])


def wait_ready(target: str, model: str, timeout: float, alive: Any = None) -> None:
    """Block until ServerReady and ModelReady(model) both answer true; `alive()` false (the
    server process died) or the timeout raises."""
    import grpc

    pb, pb_grpc = stubs()
    deadline = time.perf_counter() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                if (
                    stub.ServerReady(pb.ServerReadyRequest(), timeout=1).ready
                    and stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=1).ready
                ):
                    return
            except grpc.RpcError:
                pass
            if alive is not None and not alive():
                raise RuntimeError(f"server for {model} at {target} exited before it was ready")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{model} at {target} not ready after {timeout:.0f}s")
            time.sleep(0.1)
