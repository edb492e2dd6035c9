"""Interpolate and Edit on numpy arrays: check, encode, move in latent space, decode.

The latent-space counterpart of `core.py`, whose public encode and decode it uses, so every
graph run goes through the batchers. The checks (`checks.py`, the same as the core's) run
cheapest first and before any work: malformed arguments are InvalidInput, requests over the
server's limits LimitExceeded.
"""

from __future__ import annotations

import numpy as np

from vaeserve.imaging import to_float
from vaeserve.service import checks, latent
from vaeserve.service.concepts import Vector, required
from vaeserve.service.core import VaeCore
from vaeserve.service.errors import InvalidInput
from vaeserve.service.formats import OutputFormat
from vaeserve.service.registry import LoadedModel
from vaeserve.service.requests import (
    Decoded,
    DecodeRequest,
    EditRequest,
    EncodeRequest,
    Endpoint,
    InterpolateRequest,
)


async def interpolate(
    core: VaeCore, model: LoadedModel, r: InterpolateRequest, deadline: float | None = None
) -> Decoded:
    """`steps` decoded points from start to end; image endpoints are encoded (posterior mean)."""
    points = [_endpoint(model, e, name) for e, name in ((r.start, "start"), (r.end, "end"))]
    if r.steps < 2:
        raise InvalidInput(f"steps: got {r.steps}, need at least 2 (both endpoints included)")
    checks.check_rows(r.steps, "steps", core.settings, unit=" images")
    _check_size(core, model, r.steps, r.fmt)
    images = [to_float(p.array) for p in points if p.kind == "image"]
    if images:  # both images in one encoder run
        both = EncodeRequest(np.concatenate(images))
        encoded = iter((await core.encode(model, both, deadline)).z_mean)
        a, b = (next(encoded) if p.kind == "image" else p.array[0] for p in points)
    else:
        a, b = points[0].array[0], points[1].array[0]
    path = latent.interpolate(a, b, r.steps, r.method)
    if not np.isfinite(path).all():  # a spherical arc between huge latents can leave float32
        raise InvalidInput(
            "start, end: the path between these latents leaves the float32 range; use smaller "
            "latents or the linear method",
            field="start",
        )
    return Decoded(await core.decode(model, DecodeRequest(path, r.fmt), deadline), path)


async def edit(
    core: VaeCore, model: LoadedModel, r: EditRequest, deadline: float | None = None
) -> Decoded:
    """Every image moved by alpha * v for every alpha, decoded: row i * A + j is image i with
    alphas[j]."""
    vector = concept_vector(model, r.concept)
    a = checks.check_alphas(r.alphas, core.settings)
    images = r.images
    n = int(images.shape[0]) if images.ndim >= 1 else 0
    if images.ndim == 4 and n >= 1:  # shape and count problems are the encoder's to report
        what = f"images x alphas ({n} x {len(a)})"
        checks.check_rows(n * len(a), what, core.settings, unit=" images", field="alphas")
        _check_size(core, model, n * len(a), r.fmt)
    z = (await core.encode(model, EncodeRequest(images), deadline)).z_mean
    moved = latent.edit(z, vector.vector, a)
    return Decoded(await core.decode(model, DecodeRequest(moved, r.fmt), deadline), moved)


def concept_vector(model: LoadedModel, name: str) -> Vector:
    if not name:
        raise InvalidInput("concept: missing (a name from ListConcepts, e.g. 'label:7')")
    return required(model.concepts, model.spec).vector(name)


def _endpoint(model: LoadedModel, endpoint: Endpoint | None, name: str) -> Endpoint:
    if endpoint is None:
        raise InvalidInput(f"{name}: missing (set {name}_latent or {name}_image)")
    if endpoint.kind == "latent":
        checks.check_one_latent(model.spec, endpoint.array, endpoint.what)
    else:
        checks.check_one_image(model.spec, endpoint.array, endpoint.what)
    return endpoint


def _check_size(core: VaeCore, model: LoadedModel, rows: int, fmt: OutputFormat) -> None:
    """Images plus latents of the response must fit in one message."""
    payload = rows * checks.row_bytes(model.spec, fmt)
    checks.check_response(payload, core.settings, n=rows, fmt=fmt)
