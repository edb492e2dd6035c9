"""Protobuf <-> numpy and domain objects. Wire-format problems (unknown dtype, byte length that
does not match the shape) are InvalidInput here; what the model needs is checked by the core."""

from __future__ import annotations

from typing import Any

import numpy as np

from vaeserve import __version__
from vaeserve.service.concepts import Concepts, Vector
from vaeserve.service.core import Encoded, LoadedModel, Sampled, VaeCore
from vaeserve.service.errors import InvalidInput
from vaeserve.service.formats import OutputFormat, Rendered
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.service.latent import Method
from vaeserve.service.latent_ops import Decoded, Endpoint
from vaeserve.v1 import vae_pb2 as pb

__all__ = [
    "concepts_response",
    "decode_response",
    "decoded_response",
    "edit_args",
    "encode_response",
    "endpoint",
    "interpolate_args",
    "interpolation_method",
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
        "concept": request.concept,
    }


METHODS: dict[int, Method] = {
    pb.INTERPOLATION_METHOD_UNSPECIFIED: "linear",
    pb.INTERPOLATION_METHOD_LINEAR: "linear",
    pb.INTERPOLATION_METHOD_SPHERICAL: "spherical",
}


def interpolation_method(value: int) -> Method:
    if value not in METHODS:
        raise InvalidInput(f"method: unknown InterpolationMethod value {value}")
    return METHODS[value]


def endpoint(request: pb.InterpolateRequest, side: str) -> Endpoint | None:
    """The `start` or `end` oneof as an Endpoint (None when neither field is set)."""
    field = request.WhichOneof(side)
    if field is None:
        return None
    kind = field.removeprefix(f"{side}_")  # "latent" or "image"
    return Endpoint(kind, to_array(getattr(request, field), field), field)


def interpolate_args(request: pb.InterpolateRequest) -> dict[str, Any]:
    """The keyword arguments of latent_ops.interpolate for an InterpolateRequest."""
    return {
        "start": endpoint(request, "start"),
        "end": endpoint(request, "end"),
        "steps": request.steps,
        "method": interpolation_method(request.method),
        "fmt": output_format(request.format),
    }


def edit_args(request: pb.EditRequest) -> dict[str, Any]:
    """The keyword arguments of latent_ops.edit for an EditRequest."""
    return {
        "images": to_array(request.images, "images", request.HasField("images")),
        "concept": request.concept,
        "alphas": list(request.alphas),
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


def decoded_response(
    response: pb.InterpolateResponse | pb.EditResponse,
    model: LoadedModel,
    decoded: Decoded,
    rendered: Rendered,
) -> pb.InterpolateResponse | pb.EditResponse:
    """Fill an Interpolate or Edit response: images, the latents decoded, model and version."""
    response.latents.CopyFrom(to_tensor(decoded.latents))
    response.model, response.version = model.spec.name, model.spec.version
    _put_images(response, rendered)
    return response


def concepts_response(model: LoadedModel) -> pb.ListConceptsResponse:
    """The model's concepts.json as ListConcepts shows it (empty lists when it has none)."""
    response = pb.ListConceptsResponse(model=model.spec.name, version=model.spec.version)
    concepts: Concepts | None = model.concepts
    if concepts is None:
        return response
    response.vectors.extend(_vector(v) for v in concepts.listed())
    response.labels.extend(
        pb.ConceptLabel(
            label=stats.label,
            count=stats.count,
            mean=to_tensor(stats.mean.astype(np.float32)),
            covariance=to_tensor(stats.covariance.astype(np.float32)),
        )
        for stats in concepts.labels.values()
    )
    response.dataset, response.encoder_sha256 = concepts.dataset, concepts.encoder_sha256
    return response


def _vector(vector: Vector) -> pb.ConceptVector:
    v = vector.vector.astype(np.float32)
    return pb.ConceptVector(
        name=vector.name,
        kind=vector.kind,
        description=vector.description,
        vector=to_tensor(v),
        norm=float(np.linalg.norm(vector.vector)),
    )


def _put_images(response: Any, rendered: Rendered) -> None:
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
        # of the bytes really loaded (verified against model.json; fp16: the variants')
        encoder_sha256=runtime.encoder.sha256,
        decoder_sha256=runtime.decoder.sha256,
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
        precision=runtime.precision,
        io_binding=runtime.decoder.io_binding,
        batch_buckets=runtime.decoder.buckets or [],
        tensorrt_requested=runtime.tensorrt,
    )
