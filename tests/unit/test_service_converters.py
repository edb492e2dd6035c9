"""Tensor <-> numpy on the wire, output formats and their size bounds."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from vaeserve.service.errors import InvalidInput
from vaeserve.service.formats import image_bytes, render
from vaeserve.service.grpc.converters import output_format, sample_request
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.service.requests import SampleRequest
from vaeserve.v1 import vae_pb2 as pb

shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.uint8]), shapes))
def test_roundtrip(array):
    back = to_array(to_tensor(array), "x")
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_bytes_are_little_endian_whatever_the_input_order():
    big = np.array([[1.5, -2.0]], dtype=">f4")
    tensor = to_tensor(big)
    assert tensor.data == np.array([[1.5, -2.0]], dtype="<f4").tobytes()
    assert tensor.dtype == pb.DTYPE_FLOAT32 and list(tensor.shape) == [1, 2]


def test_other_dtypes_do_not_travel():
    with pytest.raises(ValueError, match="float32 and uint8"):
        to_tensor(np.zeros(2, np.float64))


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (pb.Tensor(shape=[2], dtype=pb.DTYPE_UNSPECIFIED, data=b"\0" * 8), "DTYPE_UNSPECIFIED"),
        (pb.Tensor(shape=[2], dtype=42, data=b"\0" * 8), "dtype 42"),
        (pb.Tensor(shape=[], dtype=pb.DTYPE_FLOAT32, data=b""), "one or more dimensions"),
        (pb.Tensor(shape=[2, -1], dtype=pb.DTYPE_FLOAT32, data=b""), "each >= 0"),
        (pb.Tensor(shape=[2, 3], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 23), "needs 24 bytes"),
        (pb.Tensor(shape=[2, 3], dtype=pb.DTYPE_UINT8, data=b"\0" * 7), "needs 6 bytes"),
        (pb.Tensor(shape=[2**62, 2**62], dtype=pb.DTYPE_UINT8, data=b""), "bytes of data"),
    ],
)
def test_malformed_tensors(tensor, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        to_array(tensor, "x")


def test_missing_tensor():
    with pytest.raises(InvalidInput, match="x: missing"):
        to_array(pb.Tensor(), "x", present=False)


def test_formats_and_sample_arguments():
    assert output_format(pb.IMAGE_FORMAT_UNSPECIFIED) == "float32"
    assert output_format(pb.IMAGE_FORMAT_PNG) == "png"
    with pytest.raises(InvalidInput, match="unknown ImageFormat value 9"):
        output_format(9)
    args = sample_request(pb.SampleRequest(n=3))
    assert args == SampleRequest(
        n=3, seed=None, temperature=1.0, offset=0, fmt="float32", concept=""
    )
    args = sample_request(
        pb.SampleRequest(n=3, seed=0, temperature=0.0, offset=5, format=2, concept="label:1")
    )
    assert args == SampleRequest(
        n=3,
        seed=0,
        temperature=0.0,
        offset=5,
        fmt="uint8",
        concept="label:1",
    )


@settings(max_examples=25, deadline=None)
@given(
    channels=st.sampled_from([1, 3]),
    side=st.one_of(st.integers(1, 40), st.sampled_from([128, 256, 300])),
    seed=st.integers(0, 2**32 - 1),
)
def test_rendered_sizes_stay_under_the_bound(channels, side, seed):
    """Even incompressible noise fits in image_bytes, which sizes stream chunks up front."""
    images = np.random.default_rng(seed).random((2, channels, side, side), dtype=np.float32)
    for fmt in ("float32", "uint8", "png"):
        out = render(images, fmt)
        size = out.array.nbytes // 2 if out.array is not None else max(map(len, out.encoded))
        assert size <= image_bytes((channels, side, side), fmt)


def test_png_holds_the_uint8_values():
    images = np.random.default_rng(0).random((3, 3, 5, 4), dtype=np.float32)
    uint8 = render(images, "uint8").array
    for k, png in enumerate(render(images, "png").encoded):
        decoded = np.asarray(Image.open(io.BytesIO(png))).transpose(2, 0, 1)
        np.testing.assert_array_equal(decoded, uint8[k])
