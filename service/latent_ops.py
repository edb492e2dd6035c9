"""Interpolate and Edit on numpy arrays: validate, encode, move in latent space, decode.

The latent-space counterpart of `core.py` (which it uses through its public encode and decode,
so every graph run goes through the batchers). Checks run cheapest first and before any work:
malformed arguments are InvalidInput, requests over the server's limits LimitExceeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vaeserve.service import latent
from vaeserve.service.concepts import Vector, required
from vaeserve.service.core import LoadedModel, VaeCore
from vaeserve.service.echo import shown_list
from vaeserve.service.errors import InvalidInput, LimitExceeded
from vaeserve.service.formats import MESSAGE_OVERHEAD, OutputFormat, image_bytes

MAX_ALPHA = 100.0


@dataclass
class Endpoint:
    """One end of an interpolation: a latent [1, L] or an image [1, C, H, W]."""

    kind: str  # "latent" or "image"
    array: np.ndarray
    what: str  # the request field, for messages


@dataclass
class Decoded:
    """Images (float32 NCHW in [0, 1]) and the latents [N, L] they were decoded from."""

    images: np.ndarray
    latents: np.ndarray


async def interpolate(
    core: VaeCore,
    model: LoadedModel,
    start: Endpoint | None,
    end: Endpoint | None,
    steps: int,
    method: latent.Method = "linear",
    fmt: OutputFormat = "float32",
    deadline: float | None = None,
) -> Decoded:
    """`steps` decoded points from start to end; image endpoints are encoded (posterior mean)."""
    points = [_endpoint(model, e, name) for e, name in ((start, "start"), (end, "end"))]
    if steps < 2:
        raise InvalidInput(f"steps: got {steps}, need at least 2 (both endpoints included)")
    _check_rows(core, steps, "steps")
    _check_size(core, model, steps, fmt)
    images = [_as_float(p.array) for p in points if p.kind == "image"]
    if images:  # both images in one encoder run
        encoded = iter((await core.encode(model, np.concatenate(images), deadline=deadline)).z_mean)
        a, b = (next(encoded) if p.kind == "image" else p.array[0] for p in points)
    else:
        a, b = points[0].array[0], points[1].array[0]
    path = latent.interpolate(a, b, steps, method)
    if not np.isfinite(path).all():  # a spherical arc between huge latents can leave float32
        raise InvalidInput(
            "start, end: the path between these latents leaves the float32 range; use smaller "
            "latents or the linear method"
        )
    return Decoded(await core.decode(model, path, fmt, deadline), path)


async def edit(
    core: VaeCore,
    model: LoadedModel,
    images: np.ndarray,
    concept: str,
    alphas: Sequence[float],
    fmt: OutputFormat = "float32",
    deadline: float | None = None,
) -> Decoded:
    """Every image moved by alpha * v for every alpha, decoded: row i * A + j is image i with
    alphas[j]."""
    vector = concept_vector(model, concept)
    a = _check_alphas(core, alphas)
    n = int(images.shape[0]) if images.ndim >= 1 else 0
    if images.ndim == 4 and n >= 1:  # shape and count problems are the encoder's to report
        _check_rows(core, n * len(a), f"images x alphas ({n} x {len(a)})")
        _check_size(core, model, n * len(a), fmt)
    z = (await core.encode(model, images, deadline=deadline)).z_mean
    moved = latent.edit(z, vector.vector, a)
    return Decoded(await core.decode(model, moved, fmt, deadline), moved)


def concept_vector(model: LoadedModel, name: str) -> Vector:
    if not name:
        raise InvalidInput("concept: missing (a name from ListConcepts, e.g. 'label:7')")
    return required(model.concepts, model.spec).vector(name)


def _endpoint(model: LoadedModel, endpoint: Endpoint | None, name: str) -> Endpoint:
    spec = model.spec
    if endpoint is None:
        raise InvalidInput(f"{name}: missing (set {name}_latent or {name}_image)")
    x, what = endpoint.array, endpoint.what
    if endpoint.kind == "latent":
        if x.shape != (1, spec.latent_dim):
            raise InvalidInput(
                f"{what}: shape {shown_list(x.shape)}, but {spec.name} v{spec.version} needs one "
                f"latent "
                f"[1, {spec.latent_dim}]"
            )
        if x.dtype != np.float32:
            raise InvalidInput(f"{what}: dtype {x.dtype}, need float32")
        if not np.isfinite(x).all():
            raise InvalidInput(f"{what}: values must be finite (no NaN or infinity)")
    elif x.shape != (1, *spec.image_shape):
        c, h, w = spec.image_shape
        raise InvalidInput(
            f"{what}: shape {shown_list(x.shape)}, but {spec.name} v{spec.version} needs one "
            "image "
            f"[1, {c}, {h}, {w}]"
        )
    return endpoint


def _as_float(images: np.ndarray) -> np.ndarray:
    """uint8 as float32 in [0, 1], so two endpoints of different dtypes encode together."""
    return images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 else images


def _check_alphas(core: VaeCore, alphas: Sequence[float]) -> np.ndarray:
    if len(alphas) == 0:
        raise InvalidInput("alphas: need at least one (0 gives the plain reconstruction)")
    _check_rows(core, len(alphas), "alphas")
    a = np.asarray(alphas, dtype=np.float64)
    bad = ~np.isfinite(a) | (np.abs(a) > MAX_ALPHA)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInput(
            f"alphas: each must be finite and in [-{MAX_ALPHA:g}, {MAX_ALPHA:g}]; "
            f"alphas[{i}] is {a[i]}"
        )
    return a


def _check_rows(core: VaeCore, rows: int, what: str) -> None:
    limit = core.limits.max_images_per_request
    if rows > limit:
        raise LimitExceeded(
            f"{what}: {rows} images is over this server's max_images_per_request {limit}"
        )


def _check_size(core: VaeCore, model: LoadedModel, rows: int, fmt: OutputFormat) -> None:
    """Images plus latents of the response must fit in one message."""
    per_row = image_bytes(model.spec.image_shape, fmt) + 4 * model.spec.latent_dim
    size = rows * per_row + MESSAGE_OVERHEAD
    if size > core.limits.max_message_bytes:
        raise LimitExceeded(
            f"the response would be about {size} bytes ({rows} images as {fmt}), over "
            f"max_message_bytes {core.limits.max_message_bytes}; ask for fewer, uint8 or png"
        )
