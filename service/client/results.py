"""What VaeClient's methods return: numpy arrays and plain values, built from the replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vaeserve.service.grpc.tensors import to_array
from vaeserve.v1 import vae_pb2 as pb


@dataclass
class EncodeResult:
    z_mean: np.ndarray
    z_log_var: np.ndarray
    z: np.ndarray | None
    seed: int


@dataclass
class LatentImages:
    """Interpolate or Edit: images (array for float32/uint8, else None), encoded files (png format,
    else None), and the latents they were decoded from, row for row."""

    images: np.ndarray | None
    encoded: list[bytes] | None
    latents: np.ndarray

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def png(self) -> list[bytes] | None:
        """Deprecated alias of `encoded` (the files of the png format)."""
        return self.encoded


@dataclass
class SampleResult(LatentImages):
    """Sample or one SampleStream message: LatentImages, plus the seed and the index of the
    first image in the seed's sequence."""

    seed: int = 0
    offset: int = 0


@dataclass
class Concept:
    """A named direction in latent space (ListConcepts), for `edit`."""

    name: str
    kind: str
    description: str
    vector: np.ndarray
    norm: float


@dataclass
class ConceptLabel:
    """Where the encoder puts one label's images: count, mean [L], covariance [L, L]."""

    label: str
    count: int
    mean: np.ndarray
    covariance: np.ndarray


@dataclass
class Concepts:
    """A model's concepts: vectors by name, label statistics by label (both empty when the
    model has no concepts.json), the dataset they came from and the encoder they describe."""

    vectors: dict[str, Concept]
    labels: dict[str, ConceptLabel]
    dataset: str
    encoder_sha256: str


@dataclass
class ModelInfo:
    name: str
    version: int
    latent_dim: int
    image_shape: tuple[int, int, int]
    encoder_sha256: str
    decoder_sha256: str
    providers: list[str]
    requested_providers: list[str]
    gpu_fallback: bool
    threads: int
    limits: dict[str, Any]
    models: list[tuple[str, int]]
    server_version: str
    onnxruntime_version: str
    metadata: dict[str, Any] = field(repr=False)


def latent_images_of(reply: pb.InterpolateResponse | pb.EditResponse) -> LatentImages:
    images = to_array(reply.images, "images") if reply.HasField("images") else None
    encoded = list(reply.encoded) if reply.encoded else None
    return LatentImages(images, encoded, to_array(reply.latents, "latents"))


def sample_result_of(reply: pb.SampleResponse) -> SampleResult:
    images = to_array(reply.images, "images") if reply.HasField("images") else None
    encoded = list(reply.encoded) if reply.encoded else None
    return SampleResult(
        images, encoded, to_array(reply.latents, "latents"), reply.seed, reply.offset
    )
