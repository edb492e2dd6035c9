"""Request checks shared by every operation (core.py, latent_ops.py): what a model takes, and
what this server's limits allow. Each raises a domain error whose message names the field, what
was sent (bounded, via `echo`) and what is needed; none does any work, so they run first.

The size of a response row is written once here (`row_bytes`), so the refusal up front and the
streaming chunk size agree with what is really sent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vaeserve.imaging import to_float
from vaeserve.service.config import Settings
from vaeserve.service.echo import shown_list
from vaeserve.service.errors import InvalidInput, LimitExceeded, field_of
from vaeserve.service.formats import MESSAGE_OVERHEAD, OutputFormat, image_bytes
from vaeserve.service.repository import ModelSpec

MAX_TEMPERATURE = 100.0
MAX_ALPHA = 100.0
MAX_INDEX = 2**63  # offset + n stays below this


def row_bytes(spec: ModelSpec, fmt: OutputFormat, *, latents: bool = True) -> int:
    """Upper bound of one row of a response: its image, and its latent when the reply has one."""
    return image_bytes(spec.image_shape, fmt) + (4 * spec.latent_dim if latents else 0)


def check_rows(
    n: int, what: str, s: Settings, unit: str = "", hint: str = "", field: str | None = None
) -> None:
    """At most max_images_per_request rows (images, latents, points of a path) in one request;
    `field` is the request field to blame (default: the one `what` starts with)."""
    limit = s.max_images_per_request
    if n > limit:
        raise LimitExceeded(
            f"{what}: {n}{unit} is over this server's max_images_per_request {limit}{hint}",
            limit="max_images_per_request",
            field=field,
        )


def check_count(n: int, what: str, s: Settings) -> None:
    """At least one row, and at most max_images_per_request."""
    if n < 1:
        raise InvalidInput(
            f"{what}: got {n}, need at least 1",
            field=f"{field_of(what)}.shape",
            reason="INVALID_TENSOR",
        )
    check_rows(n, what, s, hint="; split the request")


def check_response(payload: int, s: Settings, *, n: int = 0, fmt: str = "", more: str = "") -> None:
    """A response of `payload` bytes (plus framing) must fit in one message; `n` images as `fmt`
    are named in the refusal, with what to ask for instead (`more`: another way, if any)."""
    size = payload + MESSAGE_OVERHEAD
    if size > s.max_message_bytes:
        what = f" ({n} images as {fmt})" if n else ""
        hint = f"; ask for fewer, uint8 or png{more}" if n else ""
        raise LimitExceeded(
            f"the response would be about {size} bytes{what}, over max_message_bytes "
            f"{s.max_message_bytes}{hint}",
            limit="max_message_bytes",
            field="",
        )


def check_finite(array: np.ndarray, what: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = int((~finite).sum())
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InvalidInput(
            f"{what}: {bad} values are NaN or infinite (first at index {list(first)})",
            field=f"{what}.data",
            reason="INVALID_TENSOR",
        )


def check_images(spec: ModelSpec, images: np.ndarray, s: Settings) -> np.ndarray:
    """Images [N, C, H, W] of the model's shape, uint8 or float32 in [0, 1]; as float32."""
    want = spec.image_shape
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise InvalidInput(
            f"images: shape {shown_list(images.shape)}, but {spec.name} v{spec.version} takes "
            f"[N, {want[0]}, {want[1]}, {want[2]}] (N, channels, height, width)",
            field="images.shape",
            reason="INVALID_TENSOR",
        )
    check_count(len(images), "images: number of images", s)
    if images.dtype == np.uint8:
        return to_float(images)
    if images.dtype != np.float32:
        raise InvalidInput(
            f"images: dtype {images.dtype}, need float32 or uint8",
            field="images.dtype",
            reason="INVALID_TENSOR",
        )
    check_finite(images, "images")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise InvalidInput(
            f"images: float32 pixel values must be in [0, 1], got [{low:g}, {high:g}] "
            "(send uint8 for 0..255)",
            field="images.data",
            reason="INVALID_TENSOR",
        )
    return images


def check_latents(spec: ModelSpec, latents: np.ndarray, s: Settings) -> np.ndarray:
    """Finite float32 latents [N, latent_dim]."""
    if latents.ndim != 2 or latents.shape[1] != spec.latent_dim:
        raise InvalidInput(
            f"latents: shape {shown_list(latents.shape)}, but {spec.name} v{spec.version} has "
            f"latent_dim {spec.latent_dim}: need [N, {spec.latent_dim}]",
            field="latents.shape",
            reason="INVALID_TENSOR",
        )
    if latents.dtype != np.float32:
        raise InvalidInput(
            f"latents: dtype {latents.dtype}, need float32",
            field="latents.dtype",
            reason="INVALID_TENSOR",
        )
    check_count(len(latents), "latents: number of rows", s)
    check_finite(latents, "latents")
    return latents


def check_sample(n: int, temperature: float, offset: int, limit: int, rpc: str) -> None:
    """n in 1..limit, a finite temperature in [0, MAX_TEMPERATURE], rows below 2**63."""
    if n < 1:
        raise InvalidInput(f"n: got {n}, need at least 1")
    if n > limit:
        more = "; use SampleStream for more" if rpc == "Sample" else ""
        raise LimitExceeded(
            f"n: {n} is over this server's limit of {limit} for {rpc}{more}",
            limit="max_sample_n" if rpc == "Sample" else "max_stream_n",
        )
    if not np.isfinite(temperature) or not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise InvalidInput(
            f"temperature: got {temperature}, need a finite value in [0, {MAX_TEMPERATURE:g}]"
        )
    if offset + n >= MAX_INDEX:
        raise InvalidInput(f"offset + n must stay below 2**63, got {offset} + {n}", field="offset")


def check_alphas(alphas: Sequence[float], s: Settings) -> np.ndarray:
    """One or more finite edit strengths in [-MAX_ALPHA, MAX_ALPHA], as float64."""
    if len(alphas) == 0:
        raise InvalidInput("alphas: need at least one (0 gives the plain reconstruction)")
    check_rows(len(alphas), "alphas", s, unit=" images")
    a = np.asarray(alphas, dtype=np.float64)
    bad = ~np.isfinite(a) | (np.abs(a) > MAX_ALPHA)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInput(
            f"alphas: each must be finite and in [-{MAX_ALPHA:g}, {MAX_ALPHA:g}]; "
            f"alphas[{i}] is {a[i]}",
            field=f"alphas[{i}]",
        )
    return a


def check_one_latent(spec: ModelSpec, x: np.ndarray, what: str) -> None:
    """One finite float32 latent [1, latent_dim] (an interpolation endpoint)."""
    if x.shape != (1, spec.latent_dim):
        raise InvalidInput(
            f"{what}: shape {shown_list(x.shape)}, but {spec.name} v{spec.version} needs one "
            f"latent [1, {spec.latent_dim}]",
            field=f"{what}.shape",
            reason="INVALID_TENSOR",
        )
    if x.dtype != np.float32:
        raise InvalidInput(
            f"{what}: dtype {x.dtype}, need float32", field=f"{what}.dtype", reason="INVALID_TENSOR"
        )
    if not np.isfinite(x).all():
        raise InvalidInput(
            f"{what}: values must be finite (no NaN or infinity)",
            field=f"{what}.data",
            reason="INVALID_TENSOR",
        )


def check_one_image(spec: ModelSpec, x: np.ndarray, what: str) -> None:
    """One image [1, C, H, W] of the model's shape (an interpolation endpoint)."""
    if x.shape != (1, *spec.image_shape):
        c, h, w = spec.image_shape
        raise InvalidInput(
            f"{what}: shape {shown_list(x.shape)}, but {spec.name} v{spec.version} needs one "
            f"image [1, {c}, {h}, {w}]",
            field=f"{what}.shape",
            reason="INVALID_TENSOR",
        )
