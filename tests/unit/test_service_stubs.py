"""The checked-in stubs are what protoc makes of vae.proto today (run `make stubs` if not)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_generator():
    spec = importlib.util.spec_from_file_location("protos_generate", ROOT / "protos/generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stubs_are_fresh(tmp_path):
    generator = load_generator()
    fresh_stubs = generator.generate(tmp_path)
    # every served proto: vaeserve/v1 (VaeService) and inference (KServe V2)
    assert {p.parent.relative_to(tmp_path).as_posix() for p in fresh_stubs} >= {
        "vaeserve/v1",
        "inference",
    }
    for fresh in fresh_stubs:
        checked_in = ROOT / "protos" / fresh.relative_to(tmp_path)
        assert checked_in.is_file(), f"{checked_in} is missing: run `make stubs`"
        assert checked_in.read_bytes() == fresh.read_bytes(), (
            f"{checked_in.name} is stale: run `make stubs` and commit the result"
        )


def test_every_proto_field_is_documented():
    """Each message field and enum value has a comment on the line(s) above it."""
    lines = (ROOT / "protos/vaeserve/v1/vae.proto").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        text = line.strip()
        is_field = text.endswith(";") and "=" in text and not text.startswith(("//", "option"))
        if not is_field or text.startswith(("syntax", "package")):
            continue
        j = i - 1
        while j >= 0 and lines[j].strip() and not lines[j].strip().startswith("//"):
            # a group of fields under one comment, e.g. `string model = 5; uint32 version = 6;`
            j -= 1
        if j < 0 or not lines[j].strip().startswith("//"):
            undocumented.append(text)
    assert not undocumented, undocumented


def test_generated_code_imports_as_the_package():
    from vaeserve.v1 import vae_pb2, vae_pb2_grpc

    assert vae_pb2.DESCRIPTOR.package == "vaeserve.v1"
    assert hasattr(vae_pb2_grpc, "VaeServiceStub")


def test_kserve_stubs_import_as_the_package():
    from vaeserve.inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

    assert grpc_predict_v2_pb2.DESCRIPTOR.package == "inference"
    assert hasattr(grpc_predict_v2_pb2_grpc, "GRPCInferenceServiceStub")


def test_client_needs_neither_onnxruntime_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['onnxruntime'] = None; sys.modules['torch'] = None; "
        "import vaeserve.service.client.generate, vaeserve.service.client as c; print(c.VaeClient)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
