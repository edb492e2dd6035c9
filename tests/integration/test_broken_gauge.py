"""vaeserve_model_version_broken{directory} and vaeserve_model_errors after every reload list each
version folder that cannot be served from disk: also a served version that lost a file and keeps
serving from memory, when the reload fails because nothing else is servable (the scan fails, or
nothing new loads), and when the whole root is gone. Repaired, the gauge empties again."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import ServerThread, running_server
from .reliability import broken_versions, copy_version, unloadable_graph
from .test_service_rpcs import scrape


def reload(srv: ServerThread, expect: str):
    assert srv.server is not None
    result = srv.call(srv.server.reload("test"))
    assert result.result == expect, result
    return result


def gauge(srv: ServerThread) -> tuple[set[str], float]:
    """The folders the broken gauge lists, and vaeserve_model_errors."""
    metrics = scrape(srv.metrics_url)
    return broken_versions(metrics), metrics["vaeserve_model_errors"]


def default_version(stub: vae_pb2_grpc.VaeServiceStub, **target: object) -> int:
    return stub.Sample(pb.SampleRequest(n=1, seed=1, **target), timeout=10).version


@pytest.fixture
def tiny(tiny_repository: Path) -> Path:
    return tiny_repository / "tiny" / "1"


def test_the_only_served_version_losing_a_graph_is_listed(tmp_path, tiny):
    root = tmp_path / "repo"
    v1 = copy_version(tiny, root, "tiny", 1)
    with (
        running_server(root, providers="cpu") as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        assert gauge(srv) == (set(), 0)
        (v1 / "decoder.onnx").unlink()
        result = reload(srv, "failed")  # nothing servable: the scan fails ...
        assert gauge(srv) == ({str(v1)}, 1)  # ... and the served version is listed
        assert "decoder.onnx: missing" in result.errors[str(v1)]
        assert default_version(stub) == 1  # still served from memory

        copy_version(tiny, root, "tiny", 1)  # repaired: the same files as served
        assert reload(srv, "unchanged").errors == {}
        assert gauge(srv) == (set(), 0)


def test_every_version_that_lost_a_file_is_listed_among_several(tmp_path, tiny):
    root = tmp_path / "repo"
    v1, v2 = (copy_version(tiny, root, "tiny", v) for v in (1, 2))
    with (
        running_server(root, providers="cpu") as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        (v1 / "encoder.onnx").unlink()  # the older one, v2 still fine
        reload(srv, "partial")
        assert gauge(srv) == ({str(v1)}, 1)
        assert default_version(stub, version=1) == 1  # from memory

        (v2 / "decoder.onnx").unlink()  # now nothing is servable on disk
        result = reload(srv, "failed")
        assert gauge(srv) == ({str(v1), str(v2)}, 2)
        assert set(result.errors) >= {str(root), str(v1), str(v2)}
        assert (default_version(stub), default_version(stub, version=1)) == (2, 1)


def test_served_versions_are_listed_when_nothing_else_loads_or_the_root_is_gone(tmp_path, tiny):
    root = tmp_path / "repo"
    v1 = copy_version(tiny, root, "tiny", 1)
    with (
        running_server(root, providers="cpu") as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        shutil.rmtree(v1)  # v1 removed, and the v2 meant to replace it does not load:
        v2 = unloadable_graph(copy_version(tiny, root, "tiny", 2)).parent
        result = reload(srv, "failed")  # nothing to serve but v1, from memory
        assert gauge(srv) == ({str(v1), str(v2)}, 2)
        assert "ONNX Runtime cannot load it" in result.errors[str(v2)]
        assert "still served from memory" in result.errors[str(v1)]
        assert default_version(stub) == 1

        shutil.rmtree(root)  # the whole root gone: v1 is not servable on disk either
        result = reload(srv, "failed")
        assert "does not exist" in result.errors[str(root)]
        assert gauge(srv) == ({str(v1)}, 1)
        assert default_version(stub) == 1

        copy_version(tiny, root, "tiny", 1)  # back, the same files as served
        assert reload(srv, "unchanged").errors == {}
        assert gauge(srv) == (set(), 0)
