"""Protobuf <-> the core's typed requests and results (`service/requests.py`). Wire-format
problems (unknown dtype or enum value, byte length that does not match the shape) are
InvalidInput here; what the model needs is checked by the core. One request converter and one
response converter per RPC; nothing here reads sessions or settings."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vaeserve.service.concepts import Concepts, Vector
from vaeserve.service.core import ModelDescription
from vaeserve.service.errors import InvalidInput
from vaeserve.service.formats import DEFAULT_FORMAT, OutputFormat, Rendered
from vaeserve.service.formats import FORMATS as OUTPUT_FORMATS
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.service.latent import Method
from vaeserve.service.registry import LoadedModel
from vaeserve.service.requests import (
    Decoded,
    DecodeRequest,
    EditRequest,
    Encoded,
    EncodeRequest,
    Endpoint,
    InterpolateRequest,
    Sampled,
    SampleRequest,
)
from vaeserve.v1 import vae_pb2 as pb


def format_value(fmt: OutputFormat) -> int:
    """The ImageFormat enum value of an output format ("png" <-> IMAGE_FORMAT_PNG)."""
    return pb.ImageFormat.Value("IMAGE_FORMAT_" + fmt.upper())


# Derived from the proto enum and formats.FORMATS, so a new format needs no edit here.
FORMATS: dict[int, OutputFormat] = {
    pb.IMAGE_FORMAT_UNSPECIFIED: DEFAULT_FORMAT,
    **{format_value(fmt): fmt for fmt in OUTPUT_FORMATS},
}


def output_format(value: int) -> OutputFormat:
    if value not in FORMATS:
        raise InvalidInput(f"format: unknown ImageFormat value {value}")
    return FORMATS[value]


def seed_of(request: pb.EncodeRequest | pb.SampleRequest) -> int | None:
    return request.seed if request.HasField("seed") else None


def temperature_of(request: pb.SampleRequest) -> float:
    return float(request.temperature) if request.HasField("temperature") else 1.0


def encode_request(request: pb.EncodeRequest) -> EncodeRequest:
    images = to_array(request.images, "images", request.HasField("images"))
    return EncodeRequest(images, sample=request.sample, seed=seed_of(request))


def decode_request(request: pb.DecodeRequest) -> DecodeRequest:
    fmt = output_format(request.format)
    latents = to_array(request.latents, "latents", request.HasField("latents"))
    return DecodeRequest(latents, fmt)


def sample_request(request: pb.SampleRequest) -> SampleRequest:
    """A SampleRequest, for Sample and SampleStream (which alone reads chunk_size)."""
    return SampleRequest(
        n=request.n,
        seed=seed_of(request),
        temperature=temperature_of(request),
        offset=request.offset,
        fmt=output_format(request.format),
        concept=request.concept,
        chunk_size=request.chunk_size,
    )


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


def interpolate_request(request: pb.InterpolateRequest) -> InterpolateRequest:
    return InterpolateRequest(
        start=endpoint(request, "start"),
        end=endpoint(request, "end"),
        steps=request.steps,
        method=interpolation_method(request.method),
        fmt=output_format(request.format),
    )


def edit_request(request: pb.EditRequest) -> EditRequest:
    return EditRequest(
        images=to_array(request.images, "images", request.HasField("images")),
        concept=request.concept,
        alphas=tuple(request.alphas),
        fmt=output_format(request.format),
    )


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
    if rendered.encoded is not None:
        response.encoded.extend(rendered.encoded)
        response.encoded_format = format_value(rendered.format)
    elif rendered.array is not None:
        response.images.CopyFrom(to_tensor(rendered.array))


def model_info(description: ModelDescription) -> pb.GetModelInfoResponse:
    """GetModelInfo's response: the description's fields are the message's."""
    fields = {f.name: getattr(description, f.name) for f in dataclasses.fields(description)}
    fields["limits"] = pb.Limits(**dataclasses.asdict(description.limits))
    fields["models"] = [pb.ModelVersion(name=n, version=v) for n, v in description.models]
    return pb.GetModelInfoResponse(**fields)
