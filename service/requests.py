"""The typed values between a transport and the core: one request dataclass per operation, and
the results the operations return. They hold numpy arrays and plain values, never protobuf, so
a rename fails in ruff and pyright instead of at run time, and another transport (HTTP, an
in-process call) builds the same objects. Which model serves a request is resolved before a
request is built (a missing model is reported before a malformed body)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vaeserve.service.formats import OutputFormat
from vaeserve.service.latent import Method


@dataclass(frozen=True)
class EncodeRequest:
    """Images to their posterior; with `sample`, also z drawn with `seed` (None: a fresh one)."""

    images: np.ndarray
    sample: bool = False
    seed: int | None = None


@dataclass(frozen=True)
class DecodeRequest:
    latents: np.ndarray
    fmt: OutputFormat = "float32"


@dataclass(frozen=True)
class SampleRequest:
    """n rows of the seed's stream from `offset`, from the prior (scaled by `temperature`) or,
    with a `label:K` concept, around that label. `chunk_size` is SampleStream's only."""

    n: int
    seed: int | None = None
    temperature: float = 1.0
    offset: int = 0
    fmt: OutputFormat = "float32"
    concept: str = ""
    chunk_size: int = 0


@dataclass(frozen=True)
class Endpoint:
    """One end of an interpolation: a latent [1, L] or an image [1, C, H, W]."""

    kind: str  # "latent" or "image"
    array: np.ndarray
    what: str  # the request field, for messages


@dataclass(frozen=True)
class InterpolateRequest:
    start: Endpoint | None
    end: Endpoint | None
    steps: int
    method: Method = "linear"
    fmt: OutputFormat = "float32"


@dataclass(frozen=True)
class EditRequest:
    """Every image moved by alpha * the concept's vector, for every alpha."""

    images: np.ndarray
    concept: str
    alphas: tuple[float, ...] = field(default=())
    fmt: OutputFormat = "float32"


@dataclass
class Encoded:
    z_mean: np.ndarray
    z_log_var: np.ndarray
    z: np.ndarray | None
    seed: int


@dataclass
class Sampled:
    """Images (float32 NCHW in [0, 1]) decoded from `latents`, rows offset.. of `seed`."""

    images: np.ndarray
    latents: np.ndarray
    seed: int
    offset: int


@dataclass
class Decoded:
    """Images (float32 NCHW in [0, 1]) and the latents [N, L] they were decoded from."""

    images: np.ndarray
    latents: np.ndarray
