"""numpy <-> vaeserve.v1.Tensor (raw little-endian bytes with shape and dtype).

Shared by the server's converters and the client; needs only numpy and protobuf.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vaeserve.service.echo import shown_list
from vaeserve.service.errors import InvalidInput
from vaeserve.v1 import vae_pb2 as pb

DTYPES: dict[int, np.dtype[Any]] = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_UINT8: np.dtype("u1"),
}
PB_DTYPES = {np.dtype("float32"): pb.DTYPE_FLOAT32, np.dtype("uint8"): pb.DTYPE_UINT8}


def to_array(tensor: pb.Tensor, what: str, present: bool = True) -> np.ndarray:
    """A Tensor as a (read-only, native-endian) numpy array; InvalidInput names the problem."""
    if not present:
        raise InvalidInput(
            f"{what}: missing (a Tensor with shape, dtype and data is required)",
            field=what,
            reason="INVALID_TENSOR",
        )
    if tensor.dtype not in DTYPES:
        name = pb.DType.Name(tensor.dtype) if tensor.dtype in pb.DType.values() else tensor.dtype
        raise InvalidInput(
            f"{what}: dtype {name} is not accepted; use DTYPE_FLOAT32 or DTYPE_UINT8",
            field=f"{what}.dtype",
            reason="INVALID_TENSOR",
        )
    shape = list(tensor.shape)
    if not shape or any(d < 0 for d in shape):
        raise InvalidInput(
            f"{what}: shape {shown_list(shape)} must list one or more dimensions, each >= 0",
            field=f"{what}.shape",
            reason="INVALID_TENSOR",
        )
    dtype = DTYPES[tensor.dtype]
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != expected:
        raise InvalidInput(
            f"{what}: shape {shown_list(shape)} of {dtype.name} needs {expected} bytes of data, "
            f"got {len(tensor.data)}",
            field=f"{what}.data",
            reason="INVALID_TENSOR",
        )
    try:
        array = np.frombuffer(tensor.data, dtype=dtype).reshape(shape)
    except ValueError:  # e.g. [0, 2**62, 2**62]: no data, but numpy cannot index the shape
        raise InvalidInput(
            f"{what}: shape {shown_list(shape)} is too large to address",
            field=f"{what}.shape",
            reason="INVALID_TENSOR",
        ) from None
    return array.astype(dtype.newbyteorder("="), copy=False)


def to_tensor(array: np.ndarray) -> pb.Tensor:
    """A float32 or uint8 array as a little-endian Tensor (other dtypes: ValueError)."""
    native = np.dtype(array.dtype).newbyteorder("=")
    if native not in PB_DTYPES:
        raise ValueError(f"only float32 and uint8 tensors travel; got {array.dtype}")
    little = np.ascontiguousarray(array, dtype=native.newbyteorder("<"))
    return pb.Tensor(shape=list(array.shape), dtype=PB_DTYPES[native], data=little.tobytes())
