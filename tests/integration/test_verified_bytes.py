"""The bytes served are the bytes verified: each graph file is read once, its sha256 checked
against model.json, and the ONNX Runtime session made from those same bytes. A graph replaced
between the repository scan and the load (model.json untouched) is never served, at start-up or in
a reload, and is reported broken like any other; GetModelInfo reports the sha256 of the graphs
that really run (the float16 variants under fp16)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import save_untrained_checkpoint
from vaeserve.export.onnx_eval import cpu_session
from vaeserve.service import rng
from vaeserve.service.grpc.tensors import to_array
from vaeserve.service.repository import ModelRepository
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import running_server
from .reliability import copy_version
from .test_service_rpcs import scrape

ATOL = 1e-5


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def other_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid decoder.onnx with the tiny model's signature but other weights (seed 1)."""
    from vaeserve.export.onnx_export import export_model

    root = tmp_path_factory.mktemp("other-decoder")
    ckpt = save_untrained_checkpoint(root.parent / f"{root.name}.pt", seed=1)
    export_model(ckpt, root, "tiny", 1, batch_sizes=(1, 3))
    return root / "tiny" / "1" / "decoder.onnx"


def swap_after_scan(monkeypatch: pytest.MonkeyPatch, graph: Path, replacement: Path) -> list[Path]:
    """Replace `graph` by `replacement` right after the first repository scan that finds it
    (model.json untouched): the window between the scan's check and the load. Returns a list
    that holds `graph` once the swap happened."""
    scan = ModelRepository.scan
    swapped: list[Path] = []

    def scan_then_swap(self: ModelRepository) -> ModelRepository:
        result = scan(self)
        if not swapped and graph.is_file():
            shutil.copyfile(replacement, graph)
            swapped.append(graph)
        return result

    monkeypatch.setattr(ModelRepository, "scan", scan_then_swap)
    return swapped


def assert_not_found(stub: vae_pb2_grpc.VaeServiceStub, version: int) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Sample(pb.SampleRequest(n=1, seed=0, version=version), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()


def assert_serves(stub: vae_pb2_grpc.VaeServiceStub, decoder: Path, version: int) -> None:
    """The default version is `version`, and its Sample is what `decoder` computes."""
    reply = stub.Sample(pb.SampleRequest(n=4, seed=7), timeout=30)
    assert reply.version == version
    want = cpu_session(decoder).run(None, {"z": rng.normal_rows(7, 0, 4, 3)})[0]
    np.testing.assert_allclose(to_array(reply.images, "images"), want, atol=ATOL)


def test_a_graph_swapped_after_the_scan_is_not_served_at_start(
    tmp_path, tiny_repository, other_decoder, monkeypatch, caplog
):
    root = tmp_path / "repo"
    v1 = copy_version(tiny_repository / "tiny" / "1", root, "tiny", 1)
    v2 = copy_version(tiny_repository / "tiny" / "1", root, "tiny", 2)
    swapped = swap_after_scan(monkeypatch, v2 / "decoder.onnx", other_decoder)
    with (
        running_server(root, providers="cpu") as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        assert swapped == [v2 / "decoder.onnx"]
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert (info.version, [(m.name, m.version) for m in info.models]) == (1, [("tiny", 1)])
        assert info.decoder_sha256 == sha256(v1 / "decoder.onnx")
        assert info.encoder_sha256 == sha256(v1 / "encoder.onnx")
        assert_serves(stub, v1 / "decoder.onnx", 1)
        assert_not_found(stub, 2)
        metrics = scrape(srv.metrics_url)
    assert metrics[f'vaeserve_model_version_broken{{directory="{v2}"}}'] == 1
    assert metrics["vaeserve_model_errors"] == 1
    assert f"{v2 / 'decoder.onnx'}: sha256 does not match model.json" in caplog.text
    assert "changed after the scan?" in caplog.text


def test_a_graph_swapped_between_the_scan_and_the_load_of_a_reload_is_not_served(
    tmp_path, tiny_repository, other_decoder, monkeypatch
):
    root = tmp_path / "repo"
    v1 = copy_version(tiny_repository / "tiny" / "1", root, "tiny", 1)
    with (
        running_server(root, providers="cpu") as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        assert srv.server is not None
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        v3 = copy_version(tiny_repository / "tiny" / "1", root, "tiny", 3)
        swapped = swap_after_scan(monkeypatch, v3 / "decoder.onnx", other_decoder)
        result = srv.call(srv.server.reload("test"))
        assert swapped == [v3 / "decoder.onnx"]
        assert (result.result, result.added, result.serving) == ("partial", [], ["tiny v1"])
        assert "sha256 does not match model.json" in result.errors[str(v3)]
        assert "changed after the scan?" in result.errors[str(v3)]
        assert_serves(stub, v1 / "decoder.onnx", 1)
        assert_not_found(stub, 3)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert info.decoder_sha256 == sha256(v1 / "decoder.onnx")
        metrics = scrape(srv.metrics_url)
    assert metrics[f'vaeserve_model_version_broken{{directory="{v3}"}}'] == 1
    assert metrics["vaeserve_model_errors"] == 1
    assert metrics['vaeserve_reloads_total{result="partial"}'] == 1


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_get_model_info_reports_the_sha256_of_the_graphs_served(fp16_repository, fp16, caplog):
    caplog.set_level(logging.INFO, logger="vaeserve.service.runtime")
    folder = fp16_repository / "tiny" / "1"
    suffix = ".fp16.onnx" if fp16 else ".onnx"
    with (
        running_server(fp16_repository, providers="cpu", fp16=fp16) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        info = vae_pb2_grpc.VaeServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest())
    encoder, decoder = sha256(folder / f"encoder{suffix}"), sha256(folder / f"decoder{suffix}")
    assert info.precision == ("fp16" if fp16 else "fp32")
    assert (info.encoder_sha256, info.decoder_sha256) == (encoder, decoder)
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded tiny")]
    assert len(loaded) == 1, loaded
    assert f"encoder sha256 {encoder[:12]}" in loaded[0]
    assert f"decoder sha256 {decoder[:12]}" in loaded[0]
