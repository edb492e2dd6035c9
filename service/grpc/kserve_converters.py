"""KServe V2 (Open Inference Protocol) messages <-> the typed requests of `requests.py`.

A V2 model is one graph of one served version: `NAME-encoder` and `NAME-decoder` (a bare
`encoder` / `decoder` is the default model's); the V2 version is the version number as a string,
"" the default one (`pick_version`'s rule, as for VaeService). Tensors keep the graphs' names and
NCHW shapes (model.json). Every wire-format problem (a missing, unknown or repeated input, a
datatype, a shape that does not match the bytes, raw and typed contents together) is
`InvalidInput` naming the field; what the model takes (shape, range, counts, limits) is checked
by the core, exactly as for Encode and Decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vaeserve.inference import grpc_predict_v2_pb2 as pb
from vaeserve.service.echo import shown, shown_list
from vaeserve.service.errors import InvalidInput
from vaeserve.service.registry import LoadedModel
from vaeserve.service.requests import DecodeRequest, Encoded, EncodeRequest

GRAPHS = ("encoder", "decoder")
PLATFORM = "onnxruntime_onnx"  # Triton's platform name for ONNX graphs
# V2 datatype -> numpy dtype (little-endian on the wire) and its typed-contents field.
DATATYPES: dict[str, tuple[np.dtype, str]] = {
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "UINT8": (np.dtype("u1"), "uint_contents"),
}
ACCEPTED = {"encoder": ("FP32", "UINT8"), "decoder": ("FP32",)}


@dataclass(frozen=True)
class V2Name:
    """A V2 model name split into the served model's name ("" = default) and its graph."""

    model: str
    graph: str

    def v2(self, model: LoadedModel) -> str:
        return f"{model.spec.name}-{self.graph}"


def parse_name(name: str) -> V2Name | None:
    """`NAME-encoder`, `NAME-decoder`, or bare `encoder`/`decoder`; None for anything else."""
    if name in GRAPHS:
        return V2Name("", name)
    model, dash, graph = name.rpartition("-")
    if dash and model and graph in GRAPHS:
        return V2Name(model, graph)
    return None


def parse_version(version: str) -> int:
    """ "" -> 0 (the default version), "3" -> 3; anything else is refused."""
    if version == "":
        return 0
    if not version.isdigit() or len(version) > 18:
        raise InvalidInput(
            f'model_version: {shown(version)} is not a version number (use digits, or "" '
            "for the default version)"
        )
    return int(version)


def io_specs(model: LoadedModel, graph: str, side: str) -> list[tuple[str, list[int]]]:
    """(name, V2 shape with -1 for the batch axis) of a graph's inputs or outputs."""
    return [
        (io["name"], [d if isinstance(d, int) else -1 for d in io["shape"]])
        for io in model.spec.meta["graphs"][graph][side]
    ]


def metadata_response(
    model: LoadedModel, name: V2Name, versions: list[int]
) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(
        name=name.v2(model), versions=[str(v) for v in versions], platform=PLATFORM
    )
    for side, target in (("inputs", response.inputs), ("outputs", response.outputs)):
        for io_name, shape in io_specs(model, name.graph, side):
            target.add(name=io_name, datatype="FP32", shape=shape)
    return response


def config_response(model: LoadedModel, name: V2Name, max_rows: int) -> pb.ModelConfigResponse:
    """Triton's ModelConfig (what perf_analyzer reads): `max_rows` rows per request, so dims
    leave the batch axis out."""
    config = pb.ModelConfig(
        name=name.v2(model), platform=PLATFORM, backend="onnxruntime", max_batch_size=max_rows
    )
    for io_name, shape in io_specs(model, name.graph, "inputs"):
        config.input.add(name=io_name, data_type=pb.TYPE_FP32, dims=shape[1:])
    for io_name, shape in io_specs(model, name.graph, "outputs"):
        config.output.add(name=io_name, data_type=pb.TYPE_FP32, dims=shape[1:])
    return pb.ModelConfigResponse(config=config)


def _input_array(request: pb.ModelInferRequest, model: LoadedModel, graph: str) -> np.ndarray:
    """The one input of `graph` as a numpy array, checked against its wire description."""
    ((want, _),) = io_specs(model, graph, "inputs")
    if not request.inputs:
        raise InvalidInput(f"inputs: missing; {graph} {model.spec.name!r} takes one input {want!r}")
    if len(request.inputs) > 1:
        raise InvalidInput(
            f"inputs: {len(request.inputs)} given, but the {graph} takes one input {want!r}"
        )
    tensor = request.inputs[0]
    if tensor.name != want:
        raise InvalidInput(
            f"inputs[0].name: {shown(tensor.name)}, but the {graph} input is {want!r}"
        )
    if tensor.datatype not in ACCEPTED[graph]:
        raise InvalidInput(
            f"inputs[0].datatype: {shown(tensor.datatype)}, the {graph} takes "
            f"{' or '.join(ACCEPTED[graph])}"
        )
    shape = list(tensor.shape)
    if any(d < 0 for d in shape) or not shape:
        raise InvalidInput(f"inputs[0].shape: {shown_list(shape)} must be non-negative dims")
    count = math.prod(shape)
    dtype, typed_field = DATATYPES[tensor.datatype]
    raw, typed = bool(request.raw_input_contents), tensor.HasField("contents")
    if raw and typed:
        raise InvalidInput(
            "raw_input_contents: given together with inputs[0].contents; send one or the other"
        )
    if raw:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(
                f"raw_input_contents: {len(request.raw_input_contents)} entries for 1 input"
            )
        data = request.raw_input_contents[0]
        if len(data) != count * dtype.itemsize:
            raise InvalidInput(
                f"raw_input_contents[0]: {len(data)} bytes, but {tensor.datatype} "
                f"{shown_list(shape)} needs {count * dtype.itemsize}"
            )
        array = np.frombuffer(data, dtype=dtype)
    else:
        values = getattr(tensor.contents, typed_field)
        if len(values) != count:
            raise InvalidInput(
                f"inputs[0].contents.{typed_field}: {len(values)} values, but "
                f"{tensor.datatype} {shown_list(shape)} needs {count} (or send raw_input_contents)"
            )
        if tensor.datatype == "UINT8":
            wide = np.asarray(values, dtype=np.uint32)
            if count and int(wide.max()) > 255:
                raise InvalidInput(
                    f"inputs[0].contents.{typed_field}: UINT8 values must be 0..255, "
                    f"got {int(wide.max())}"
                )
            array = wide.astype(np.uint8)
        else:
            array = np.asarray(values, dtype=np.float32)
    return array.astype(array.dtype.newbyteorder("="), copy=False).reshape(shape)


def _requested(request: pb.ModelInferRequest, model: LoadedModel, graph: str) -> list[str]:
    """The outputs to answer with, in the order asked (all, in the graph's order, by default)."""
    names = [name for name, _ in io_specs(model, graph, "outputs")]
    if not request.outputs:
        return names
    asked = [out.name for out in request.outputs]
    for i, name in enumerate(asked):
        if name not in names:
            raise InvalidInput(f"outputs[{i}].name: {shown(name)}; the {graph} has {names}")
    if len(set(asked)) != len(asked):
        raise InvalidInput(f"outputs: an output is asked for twice: {shown_list(asked)}")
    return asked


def encode_request(request: pb.ModelInferRequest, model: LoadedModel) -> EncodeRequest:
    return EncodeRequest(images=_input_array(request, model, "encoder"))


def decode_request(request: pb.ModelInferRequest, model: LoadedModel) -> DecodeRequest:
    return DecodeRequest(latents=_input_array(request, model, "decoder"), fmt="float32")


def outputs_for(request: pb.ModelInferRequest, model: LoadedModel, graph: str) -> list[str]:
    """Checked before any work, so a bad output name costs no graph run."""
    return _requested(request, model, graph)


def infer_response(
    request: pb.ModelInferRequest,
    model: LoadedModel,
    name: V2Name,
    outputs: list[str],
    arrays: dict[str, np.ndarray],
) -> pb.ModelInferResponse:
    """The named arrays as raw little-endian FP32 outputs, in the order of `outputs`."""
    response = pb.ModelInferResponse(
        model_name=name.v2(model), model_version=str(model.spec.version), id=request.id
    )
    for out in outputs:
        array = np.ascontiguousarray(arrays[out], dtype="<f4")
        response.outputs.add(name=out, datatype="FP32", shape=list(array.shape))
        response.raw_output_contents.append(array.tobytes())
    return response


def encoder_arrays(model: LoadedModel, encoded: Encoded) -> dict[str, np.ndarray]:
    """The encoder's outputs by their graph names (z_mean, z_log_var in model.json's order)."""
    names = [name for name, _ in io_specs(model, "encoder", "outputs")]
    return dict(zip(names, (encoded.z_mean, encoded.z_log_var), strict=True))


def decoder_arrays(model: LoadedModel, images: np.ndarray) -> dict[str, np.ndarray]:
    ((out, _),) = io_specs(model, "decoder", "outputs")
    return {out: images}
