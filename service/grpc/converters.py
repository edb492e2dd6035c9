"""Protobuf <-> numpy and domain objects. Wire-format problems (unknown dtype, byte length that
does not match the shape) are InvalidInput here; what the model needs is checked by the core."""

from __future__ import annotations

from typing import Any

from vaeserve import __version__
from vaeserve.service.core import Encoded, LoadedModel, Sampled, VaeCore
from vaeserve.service.errors import InvalidInput
from vaeserve.service.formats import OutputFormat, Rendered
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.v1 import vae_pb2 as pb

__all__ = [
    "decode_response",
    "encode_response",
    "model_info",
    "output_format",
    "sample_args",
    "sample_response",
    "to_array",
    "to_tensor",
]

FORMATS: dict[int, OutputFormat] = {
    pb.IMAGE_FORMAT_UNSPECIFIED: "float32",
    pb.IMAGE_FORMAT_FLOAT32: "float32",
    pb.IMAGE_FORMAT_UINT8: "uint8",
    pb.IMAGE_FORMAT_PNG: "png",
}


def output_format(value: int) -> OutputFormat:
    if value not in FORMATS:
        raise InvalidInput(f"format: unknown ImageFormat value {value}")
    return FORMATS[value]


def seed_of(request: pb.EncodeRequest | pb.SampleRequest) -> int | None:
    return request.seed if request.HasField("seed") else None


def temperature_of(request: pb.SampleRequest) -> float:
    return float(request.temperature) if request.HasField("temperature") else 1.0


def sample_args(request: pb.SampleRequest) -> dict[str, Any]:
    """The keyword arguments of VaeCore.sample / sample_stream for a SampleRequest."""
    return {
        "seed": seed_of(request),
        "temperature": temperature_of(request),
        "offset": request.offset,
        "fmt": output_format(request.format),
    }


def encode_response(model: LoadedModel, encoded: Encoded) -> pb.EncodeResponse:
    response = pb.EncodeResponse(
        z_mean=to_tensor(encoded.z_mean),
        z_log_var=to_tensor(encoded.z_log_var),
        seed=encoded.seed,
        model=model.spec.name,
        version=model.spec.version,
    )
    if encoded.z is not None:
        response.z.CopyFrom(to_tensor(encoded.z))
    return response


def decode_response(model: LoadedModel, rendered: Rendered) -> pb.DecodeResponse:
    response = pb.DecodeResponse(model=model.spec.name, version=model.spec.version)
    _put_images(response, rendered)
    return response


def sample_response(model: LoadedModel, sampled: Sampled, rendered: Rendered) -> pb.SampleResponse:
    response = pb.SampleResponse(
        latents=to_tensor(sampled.latents),
        seed=sampled.seed,
        offset=sampled.offset,
        model=model.spec.name,
        version=model.spec.version,
    )
    _put_images(response, rendered)
    return response


def _put_images(response: pb.DecodeResponse | pb.SampleResponse, rendered: Rendered) -> None:
    if rendered.png is not None:
        response.png.extend(rendered.png)
    elif rendered.array is not None:
        response.images.CopyFrom(to_tensor(rendered.array))


def model_info(core: VaeCore, model: LoadedModel) -> pb.GetModelInfoResponse:
    import onnxruntime  # already loaded by the runtime; only its version is read here

    spec, runtime, limits = model.spec, model.runtime, core.limits
    return pb.GetModelInfoResponse(
        name=spec.name,
        version=spec.version,
        latent_dim=spec.latent_dim,
        image_shape=list(spec.image_shape),
        encoder_sha256=spec.sha256("encoder"),
        decoder_sha256=spec.sha256("decoder"),
        providers=runtime.providers,
        requested_providers=[
            p.removesuffix("ExecutionProvider").lower() for p in runtime.requested
        ],
        gpu_fallback=runtime.gpu_fallback,
        threads=runtime.threads,
        limits=pb.Limits(
            max_batch_size=limits.max_batch_size,
            max_delay_ms=limits.max_delay_ms,
            max_queue=limits.max_queue,
            max_message_bytes=limits.max_message_bytes,
            max_images_per_request=limits.max_images_per_request,
            max_sample_n=limits.max_sample_n,
            max_stream_n=limits.max_stream_n,
        ),
        models=[
            pb.ModelVersion(name=name, version=version)
            for name, versions in sorted(core.repository.models.items())
            for version in sorted(versions)
        ],
        server_version=__version__,
        onnxruntime_version=onnxruntime.__version__,
        metadata_json=core.metadata_json(model),
    )
