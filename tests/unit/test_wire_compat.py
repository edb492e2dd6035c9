"""Encoded images travel in field 2, renamed from `png` to `encoded`: a client built from the old
proto must still find the files, in its `png` field, and old bytes must parse as new. Both
directions are checked against a message built from the OLD field definitions."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from vaeserve.service.formats import render
from vaeserve.service.grpc.converters import decode_response, sample_response
from vaeserve.v1 import vae_pb2 as pb

OLD_FIELDS = {  # the four responses' fields before the rename: (name, number, type, label)
    "DecodeResponse": [("png", 2), ("model", 3), ("version", 4)],
    "SampleResponse": [("png", 2), ("seed", 4), ("offset", 5), ("model", 6), ("version", 7)],
    "InterpolateResponse": [("png", 2), ("model", 4), ("version", 5)],
    "EditResponse": [("png", 2), ("model", 4), ("version", 5)],
}
F = descriptor_pb2.FieldDescriptorProto
TYPES = {"png": F.TYPE_BYTES, "model": F.TYPE_STRING, "version": F.TYPE_UINT32}


def old_message(name: str) -> type:
    """The message as the old proto declared it (the Tensor fields left out: unknown, skipped)."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"old_{name}.proto", package="old", syntax="proto3"
    )
    message = file.message_type.add(name=name)
    for field, number in OLD_FIELDS[name]:
        message.field.add(
            name=field,
            number=number,
            type=TYPES.get(field, F.TYPE_UINT64),
            label=F.LABEL_REPEATED if field == "png" else F.LABEL_OPTIONAL,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"old.{name}"))


class _Spec:
    name, version = "m", 3


class _Model:
    spec = _Spec()


@pytest.mark.parametrize("name", sorted(OLD_FIELDS))
def test_the_field_numbers_are_the_old_ones(name):
    new = getattr(pb, name).DESCRIPTOR.fields_by_name
    assert new["encoded"].number == 2 and new["encoded"].type == F.TYPE_BYTES
    assert hasattr(getattr(pb, name)().encoded, "extend")  # repeated, as png was
    for field, number in OLD_FIELDS[name][1:]:
        assert new[field].number == number
    assert new["encoded_format"].number not in {n for _, n in OLD_FIELDS[name]}


def test_an_old_client_reads_the_files_of_a_new_server():
    images = np.random.default_rng(0).random((3, 1, 5, 5), dtype=np.float32)
    new = decode_response(_Model(), render(images, "png"))  # type: ignore[arg-type]
    assert new.encoded_format == pb.IMAGE_FORMAT_PNG and len(new.encoded) == 3
    old = old_message("DecodeResponse").FromString(new.SerializeToString())
    assert list(old.png) == list(new.encoded) and old.png[0].startswith(b"\x89PNG")
    assert (old.model, old.version) == ("m", 3)


def test_a_new_client_reads_old_bytes_and_arrays_name_no_format():
    old = old_message("SampleResponse")(png=[b"\x89PNG-a", b"\x89PNG-b"], seed=7, model="m")
    new = pb.SampleResponse.FromString(old.SerializeToString())
    assert list(new.encoded) == [b"\x89PNG-a", b"\x89PNG-b"] and new.seed == 7
    z = np.zeros((2, 2), dtype=np.float32)
    images = np.zeros((2, 1, 4, 4), dtype=np.float32)
    from vaeserve.service.requests import Sampled

    reply = sample_response(_Model(), Sampled(images, z, 1, 0), render(images, "uint8"))  # type: ignore[arg-type]
    assert reply.encoded_format == pb.IMAGE_FORMAT_UNSPECIFIED and not reply.encoded
    assert reply.HasField("images")
