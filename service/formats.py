"""Output image formats (float32, uint8, PNG): conversion and worst-case sizes on the wire.

Arrays travel in a response's `images` tensor; encoded formats (PNG so far) as one file per
image in its `encoded` field, with `encoded_format` naming the format. A new encoded format is
one entry in ENCODERS and one case in `image_bytes`, plus its ImageFormat value in the proto
(IMAGE_FORMAT_<NAME>: the converters and the client map formats by name). Sizes are known
before anything is computed, so a response that could not be sent (over the message-size limit)
is refused up front instead of after the work is done.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from vaeserve.imaging import to_pil, to_uint8

OutputFormat = Literal["float32", "uint8", "png"]
FORMATS: tuple[OutputFormat, ...] = ("float32", "uint8", "png")
DEFAULT_FORMAT: OutputFormat = "float32"  # what an unset format asks for
# Protobuf framing of a message and its small fields, generously rounded up.
MESSAGE_OVERHEAD = 4096


@dataclass
class Rendered:
    """Images as they go out: an array (float32 or uint8, NCHW), or one encoded file per image
    in `format`."""

    array: np.ndarray | None = None
    encoded: list[bytes] | None = None
    format: OutputFormat = DEFAULT_FORMAT


def render(images: np.ndarray, fmt: OutputFormat) -> Rendered:
    """float32 [0, 1] NCHW images in the requested format (encoded ones from the uint8 values)."""
    if fmt == "float32":
        return Rendered(array=images)
    pixels = to_uint8(images)
    if fmt == "uint8":
        return Rendered(array=pixels, format=fmt)
    return Rendered(encoded=[ENCODERS[fmt](image) for image in pixels], format=fmt)


def is_encoded(fmt: OutputFormat) -> bool:
    """Files (CPU work, done off the event loop), not an array."""
    return fmt in ENCODERS


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 C x H x W image (C of 1 or 3) as a PNG file."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


ENCODERS: dict[OutputFormat, Callable[[np.ndarray], bytes]] = {"png": png_bytes}


def image_bytes(shape: tuple[int, int, int], fmt: OutputFormat) -> int:
    """Upper bound of one image's bytes in a response."""
    c, h, w = shape
    pixels = c * h * w
    if fmt == "float32":
        return 4 * pixels
    if fmt == "uint8":
        return pixels
    if fmt == "png":
        # A filter byte per row; deflate of incompressible pixels grows them by a fraction of a
        # percent (measured ~0.16% for noise; 1/128 leaves room), plus signature, IHDR, IDAT
        # chunk headers, IEND, CRCs and the repeated-field tag.
        raw = pixels + h
        return raw + raw // 128 + 256
    raise ValueError(f"no size bound for output format {fmt!r}")  # a new format needs its case
