"""Model reload and broken repositories: versions added, changed and removed while the server
runs (`VaeServer.reload()`, SIGHUP on a real process, polling); failed reloads keep the old models
serving; requests in flight during reloads all succeed with the right answer; and at start-up a
broken model among several is reported while the others serve, and a repository with nothing
servable is refused with a message naming the file."""

from __future__ import annotations

import gc
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import save_untrained_checkpoint
from vaeserve.export.onnx_eval import cpu_session
from vaeserve.service import rng
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import SERVE_CODE, ServerThread, running_server, serve_process
from .reliability import copy_version, corrupt_graph, metric_sum, unloadable_graph, wait_for
from .test_service_rpcs import scrape

ATOL = 1e-5  # the same graph on ONNX Runtime's CPU provider, in the server and here
DECODER = 'graph="decoder"'
IMAGES = np.random.default_rng(0).random((5, 1, 12, 12), dtype=np.float32)


@dataclass
class Reference:
    """A version folder's graphs run directly with ONNX Runtime: the answers the server owes."""

    folder: Path

    def __post_init__(self) -> None:
        self._enc = cpu_session(self.folder / "encoder.onnx")
        self._dec = cpu_session(self.folder / "decoder.onnx")

    def decode(self, z: np.ndarray) -> np.ndarray:
        return self._dec.run(None, {"z": z})[0]

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self._enc.run(None, {"image": x})[0]

    def sample(self, seed: int, n: int, offset: int = 0) -> np.ndarray:
        return self.decode(rng.normal_rows(seed, offset, n, 3))


@pytest.fixture(scope="module")
def versions(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different models of the same shape: `a` (tiny v1 of the shared repository) and `b`
    (other weights, exported here); plus their references."""
    from vaeserve.export.onnx_export import export_model

    root = tmp_path_factory.mktemp("other-weights")
    ckpt = save_untrained_checkpoint(root.parent / f"{root.name}.pt", seed=1)
    export_model(ckpt, root, "tiny", 1, batch_sizes=(1, 3))
    return {"a": tiny_repository / "tiny" / "1", "b": root / "tiny" / "1"}


@pytest.fixture(scope="module")
def refs(versions: dict[str, Path]) -> dict[str, Reference]:
    refs = {key: Reference(path) for key, path in versions.items()}
    assert not np.allclose(refs["a"].sample(0, 4), refs["b"].sample(0, 4), atol=1e-3)
    return refs


def repository(tmp_path: Path, versions: dict[str, Path], **layout: str) -> Path:
    """A fresh repository: layout maps "name_version" (e.g. tiny_1="a") to a version folder."""
    root = tmp_path / "repo"
    root.mkdir()
    for key, which in layout.items():
        name, version = key.rsplit("_", 1)
        copy_version(versions[which], root, name, int(version))
    return root


def sample(stub, seed: int = 7, n: int = 4, **target) -> tuple[np.ndarray, int]:
    reply = stub.Sample(pb.SampleRequest(n=n, seed=seed, **target), timeout=30)
    return to_array(reply.images, "images"), reply.version


def serves(stub, ref: Reference, seed: int = 7, **target) -> int:
    """Assert a Sample is `ref`'s answer; returns the version that answered."""
    images, version = sample(stub, seed, **target)
    np.testing.assert_allclose(images, ref.sample(seed, 4), atol=ATOL)
    return version


def reload(srv: ServerThread, expect: str):
    assert srv.server is not None
    result = srv.call(srv.server.reload("test"))
    assert result.result == expect, result
    return result


def served_versions(stub) -> list[tuple[str, int]]:
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    return [(m.name, m.version) for m in info.models]


# --- reload in a running server -------------------------------------------------------------


def test_reload_adds_changes_and_removes_versions(tmp_path, versions, refs):
    root = repository(tmp_path, versions, tiny_1="a")
    with running_server(root) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        assert serves(stub, refs["a"]) == 1
        reload(srv, "unchanged")

        copy_version(versions["b"], root, "tiny", 2)  # a new version becomes the default
        result = reload(srv, "ok")
        assert result.added == ["tiny v2"] and result.serving == ["tiny v1", "tiny v2"]
        assert serves(stub, refs["b"]) == 2
        assert serves(stub, refs["a"], version=1) == 1
        assert served_versions(stub) == [("tiny", 1), ("tiny", 2)]

        copy_version(versions["b"], root, "tiny", 1)  # v1 rewritten with other weights
        result = reload(srv, "ok")
        assert result.added == ["tiny v1"] and result.removed == []
        assert serves(stub, refs["b"], version=1) == 1

        v2 = weakref.ref(srv.server.core.models[("tiny", 2)].runtime)
        shutil.rmtree(root / "tiny" / "2")  # a removed version stops being served
        result = reload(srv, "ok")
        assert result.removed == ["tiny v2"] and result.serving == ["tiny v1"]
        assert serves(stub, refs["b"]) == 1
        with pytest.raises(grpc.RpcError) as err:
            sample(stub, version=2)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "has no version 2" in err.value.details()
        wait_for(lambda: gc.collect() >= 0 and v2() is None, 10, "v2's sessions freed")

        copy_version(versions["a"], root, "second", 1)  # a new model name
        assert reload(srv, "ok").added == ["second v1"]
        assert serves(stub, refs["a"], model="second") == 1
        metrics = scrape(srv.metrics_url)
    assert metrics['vaeserve_reloads_total{result="ok"}'] == 4
    assert metrics['vaeserve_reloads_total{result="unchanged"}'] == 1
    assert metrics["vaeserve_model_errors"] == 0


def test_reload_rereads_the_concepts_of_a_kept_version(tmp_path, versions, refs):
    from vaeserve.export.concepts import build_concepts
    from vaeserve.training.synthetic import make_shapes

    images, labels = make_shapes(150, height=12, width=12, seed=5)
    np.savez_compressed(tmp_path / "labelled.npz", x_train=images, y_train=labels)
    np.savez_compressed(tmp_path / "h.npz", images=images[labels == 0])
    np.savez_compressed(tmp_path / "v.npz", images=images[labels == 1])
    root = repository(tmp_path, versions, tiny_1="a")
    folder = root / "tiny" / "1"
    with running_server(root) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = vae_pb2_grpc.VaeServiceStub(channel)

        def listed() -> list[str]:
            reply = stub.ListConcepts(pb.ListConceptsRequest(), timeout=10)
            return sorted(v.name for v in reply.vectors if v.kind != "difference")

        assert listed() == []
        runtime = srv.server.core.models[("tiny", 1)].runtime
        build_concepts(folder, data=tmp_path / "labelled.npz")  # new beside a served version
        result = reload(srv, "ok")
        assert (result.concepts, result.added, result.removed) == (["tiny v1"], [], [])
        assert listed() == ["label:0", "label:1", "label:2", "label:3", "label:4"]
        reload(srv, "unchanged")

        build_concepts(folder, vectors={"bars": (tmp_path / "h.npz", tmp_path / "v.npz")})
        assert reload(srv, "ok").concepts == ["tiny v1"]  # changed: a user vector added
        assert "bars" in listed()

        (folder / "concepts.json").unlink()  # removed: nothing listed any more
        assert reload(srv, "ok").concepts == ["tiny v1"]
        assert listed() == []
        assert srv.server.core.models[("tiny", 1)].runtime is runtime  # the sessions were kept
        assert serves(stub, refs["a"]) == 1


def test_failed_reloads_keep_the_old_models_serving(tmp_path, versions, refs):
    root = repository(tmp_path, versions, tiny_1="a")
    with running_server(root) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = vae_pb2_grpc.VaeServiceStub(channel)

        corrupt_graph(copy_version(versions["b"], root, "tiny", 2))  # sha256 mismatch
        result = reload(srv, "partial")
        assert list(result.errors) == [str(root / "tiny" / "2")]
        assert "sha256 does not match" in result.errors[str(root / "tiny" / "2")]
        assert serves(stub, refs["a"]) == 1  # v1 is still the default
        metrics = scrape(srv.metrics_url)
        assert metrics["vaeserve_model_errors"] == 1
        assert metrics[f'vaeserve_model_version_broken{{directory="{root / "tiny" / "2"}"}}'] == 1

        shutil.rmtree(root / "tiny" / "2")
        unloadable_graph(copy_version(versions["b"], root, "tiny", 3))  # passes sha, not ORT
        result = reload(srv, "partial")
        assert "ONNX Runtime cannot load it" in result.errors[str(root / "tiny" / "3")]
        assert serves(stub, refs["a"]) == 1 and result.serving == ["tiny v1"]

        shutil.rmtree(root / "tiny" / "3")
        encoder = corrupt_graph(root / "tiny" / "1", "encoder")  # served version broken on disk
        result = reload(srv, "failed")  # ... and nothing else servable: the scan fails
        assert str(encoder) in result.errors[str(root)] and result.serving == ["tiny v1"]
        assert serves(stub, refs["a"]) == 1  # ... but v1 keeps serving from memory
        copy_version(versions["b"], root, "second", 1)  # with another model beside it:
        result = reload(srv, "partial")
        assert result.serving == ["second v1", "tiny v1"] and result.added == ["second v1"]
        assert "sha256 does not match" in result.errors[str(root / "tiny" / "1")]
        assert serves(stub, refs["a"], model="tiny") == 1  # ... v1 still serves from memory
        request = pb.EncodeRequest(model="tiny", images=to_tensor(IMAGES))
        reply = stub.Encode(request, timeout=10)  # its encoder, the one broken on disk
        np.testing.assert_allclose(to_array(reply.z_mean, "m"), refs["a"].encode(IMAGES), atol=ATOL)

        moved = root.with_name("moved")
        root.rename(moved)  # the whole root gone
        result = reload(srv, "failed")
        assert "does not exist" in result.errors[str(root)]
        assert serves(stub, refs["a"], model="tiny") == 1
        root.mkdir()  # there again, but empty
        assert "no servable model" in reload(srv, "failed").errors[str(root)]
        assert serves(stub, refs["a"], model="tiny") == 1
        assert served_versions(stub) == [("second", 1), ("tiny", 1)]

        root.rmdir()
        moved.rename(root)
        copy_version(versions["a"], root, "tiny", 1)  # repaired, the same files as served:
        assert reload(srv, "unchanged").errors == {}  # nothing to load, no errors left
        metrics = scrape(srv.metrics_url)
    assert metrics["vaeserve_model_errors"] == 0
    assert not [k for k in metrics if k.startswith("vaeserve_model_version_broken")]
    assert metrics['vaeserve_reloads_total{result="failed"}'] == 3
    assert metrics['vaeserve_reloads_total{result="partial"}'] == 3


@pytest.mark.slow
def test_requests_in_flight_during_reloads_all_succeed(tmp_path, versions, refs):
    """4 client threads send Sample, Encode, Decode and SampleStream while the repository flips
    12 times between {v1} and {v1, v2}. Every answer is the right one for the version that gave
    it, and none fails."""
    root = repository(tmp_path, versions, tiny_1="a")
    by_version = {1: refs["a"], 2: refs["b"]}
    latents = rng.normal_rows(3, 0, 6, 3)
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        with grpc.insecure_channel(srv.target) as channel:
            stub = vae_pb2_grpc.VaeServiceStub(channel)
            i = 0
            while not stop.is_set():
                i += 1
                kind = ("Sample", "Encode", "Decode", "SampleStream")[(worker + i) % 4]
                try:
                    versions_seen = check(stub, kind, seed=worker * 1000 + i)
                    with lock:
                        outcomes[kind] += 1
                        outcomes.update(f"v{v}" for v in versions_seen)
                except (grpc.RpcError, AssertionError) as exc:
                    with lock:
                        failures.append(f"{kind}: {exc!r}"[:500])

    def check(stub, kind: str, seed: int) -> set[int]:
        if kind == "Sample":
            images, version = sample(stub, seed)
            np.testing.assert_allclose(images, by_version[version].sample(seed, 4), atol=ATOL)
            return {version}
        if kind == "Encode":
            reply = stub.Encode(pb.EncodeRequest(images=to_tensor(IMAGES)), timeout=30)
            want = by_version[reply.version].encode(IMAGES)
            np.testing.assert_allclose(to_array(reply.z_mean, "m"), want, atol=ATOL)
            return {reply.version}
        if kind == "Decode":
            reply = stub.Decode(pb.DecodeRequest(latents=to_tensor(latents)), timeout=30)
            want = by_version[reply.version].decode(latents)
            np.testing.assert_allclose(to_array(reply.images, "i"), want, atol=ATOL)
            return {reply.version}
        chunks = list(
            stub.SampleStream(pb.SampleRequest(n=64, seed=seed, chunk_size=8), timeout=60)
        )
        assert len({c.version for c in chunks}) == 1  # a stream stays on one version
        images = np.concatenate([to_array(c.images, "i") for c in chunks])
        want = by_version[chunks[0].version].sample(seed, 64)
        np.testing.assert_allclose(images, want, atol=ATOL)
        return {chunks[0].version}

    with running_server(root) as srv:
        threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        try:
            results = []
            for flip in range(12):
                time.sleep(0.3 + 0.2 * random.random())
                if flip % 2 == 0:
                    copy_version(versions["b"], root, "tiny", 2)
                else:
                    shutil.rmtree(root / "tiny" / "2")
                results.append(srv.call(srv.server.reload("test")).result)
            time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
    print(f"reloads {Counter(results)}; requests {dict(outcomes)}; failures {len(failures)}")
    assert failures == []
    assert results == ["ok"] * 12
    assert outcomes["v1"] > 20 and outcomes["v2"] > 20  # both versions really answered
    assert all(outcomes[kind] >= 5 for kind in ("Sample", "Encode", "Decode", "SampleStream"))


def test_a_stream_finishes_on_the_version_it_started_with(tmp_path, versions, refs):
    """A long stream is running when its version is rewritten and reloaded: every chunk still
    comes from the old weights (its retired batcher restarts for it); new requests get the new
    ones."""
    root = repository(tmp_path, versions, tiny_1="a")
    no_window_growth = [("grpc.http2.bdp_probe", 0)]  # the server cannot run far ahead
    with (
        running_server(root) as srv,
        grpc.insecure_channel(srv.target, options=no_window_growth) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        stream = stub.SampleStream(pb.SampleRequest(n=400, seed=5, chunk_size=4), timeout=60)
        chunks = [next(stream) for _ in range(5)]
        copy_version(versions["b"], root, "tiny", 1)
        assert reload(srv, "ok").added == ["tiny v1"]
        batches = metric_sum(scrape(srv.metrics_url), "vaeserve_batch_size_count", DECODER)
        assert serves(stub, refs["b"]) == 1  # new requests: the new weights
        for chunk in stream:
            chunks.append(chunk)
        after = metric_sum(scrape(srv.metrics_url), "vaeserve_batch_size_count", DECODER)
    print(f"decoder batches after the swap: {after - batches - 1}")
    assert after - batches - 1 >= 10  # ... so most of the stream was computed after the swap
    images = np.concatenate([to_array(c.images, "i") for c in chunks])
    assert images.shape == (400, 1, 12, 12)
    np.testing.assert_allclose(images, refs["a"].sample(5, 400), atol=ATOL)


def test_polling_reloads_when_the_repository_changes(tmp_path, versions, refs):
    root = repository(tmp_path, versions, tiny_1="a")
    with (
        running_server(root, poll_repository_s=0.2) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        copy_version(versions["b"], root, "tiny", 2)
        wait_for(lambda: sample(stub)[1] == 2, 30, "v2 served after polling")
        assert serves(stub, refs["b"]) == 2
        shutil.rmtree(root / "tiny" / "2")
        wait_for(lambda: sample(stub)[1] == 1, 30, "v2 gone after polling")
        assert serves(stub, refs["a"]) == 1
        time.sleep(1.0)  # unchanged: polling does not reload again
        metrics = scrape(srv.metrics_url)
    assert metrics['vaeserve_reloads_total{result="ok"}'] == 2
    assert metrics.get('vaeserve_reloads_total{result="unchanged"}', 0) == 0


@pytest.mark.slow
def test_sighup_reloads_a_real_process(tmp_path, versions, refs):
    root = repository(tmp_path, versions, tiny_1="a")
    with (
        serve_process(root, tmp_path) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        assert serves(stub, refs["a"]) == 1
        copy_version(versions["b"], root, "tiny", 2)
        srv.process.send_signal(signal.SIGHUP)
        wait_for(lambda: sample(stub)[1] == 2, 60, "v2 served after SIGHUP")
        assert serves(stub, refs["b"]) == 2

        moved = root.with_name("moved")
        root.rename(moved)
        srv.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload (SIGHUP): failed" in srv.log.read_text(), 60, "failed reload")
        assert serves(stub, refs["b"]) == 2 and srv.process.poll() is None
        moved.rename(root)

        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0
    log = srv.log.read_text()
    assert "reload (SIGHUP): ok; serving ['tiny v1', 'tiny v2']; added ['tiny v2']" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_sigterm_during_a_sighup_reload_exits_within_the_grace(tmp_path, versions):
    """SIGTERM while a SIGHUP reload loads 40 new versions: the reload stops after the version
    in progress and is reported `stopped` at INFO (not a `failed` ERROR), and the process exits
    0 within about its 1 s grace instead of waiting for the other versions to load."""
    root = repository(tmp_path, versions, tiny_1="a")
    flags = ("--drain-grace-s", "1", "--max-batch-size", "256")  # a slower warm-up per version
    with serve_process(root, tmp_path, *flags) as srv:
        for version in range(2, 42):
            copy_version(versions["b"], root, "tiny", version)
        srv.process.send_signal(signal.SIGHUP)
        wait_for(lambda: srv.log.read_text().count("loaded tiny v") >= 2, 60, "reload loading")
        sigterm = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0
        took = time.monotonic() - sigterm
    log = srv.log.read_text()
    loaded = log.count("loaded tiny v") - 1
    print(f"exit after {took:.2f}s; the reload loaded {loaded} of 40 versions")
    assert loaded < 40  # it stopped early
    assert "INFO vaeserve.service.reload: reload (SIGHUP): stopped; serving ['tiny v1']" in log
    assert "failed" not in log and "Traceback" not in log
    assert took < 1.0 + 4.0  # the grace, plus the version in progress and process teardown


def test_an_unexpected_reload_error_is_logged_and_counted(tmp_path, versions, refs, caplog):
    """A bug inside a SIGHUP reload (injected: no repository state raises one) is logged with
    its traceback and counted as `error`; the server keeps serving and the next reload works."""
    root = repository(tmp_path, versions, tiny_1="a")
    with running_server(root) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        reloader = srv.server.reloader

        async def broken():
            raise RuntimeError("injected bug")

        reloader._reload = broken  # an instance attribute shadows the method
        srv.loop.call_soon_threadsafe(srv.server.request_reload)  # what SIGHUP calls
        key = 'vaeserve_reloads_total{result="error"}'
        wait_for(lambda: scrape(srv.metrics_url).get(key) == 1, 20, "the error counted")
        assert serves(stub, refs["a"]) == 1
        del reloader._reload
        copy_version(versions["b"], root, "tiny", 2)
        assert reload(srv, "ok").added == ["tiny v2"]
    (record,) = [r for r in caplog.records if "reload (SIGHUP)" in r.getMessage()]
    assert record.levelname == "ERROR" and record.exc_info is not None
    assert "reload (SIGHUP): error; serving ['tiny v1']" in record.getMessage()
    assert "RuntimeError: injected bug" in record.getMessage()


# --- broken repositories at start-up --------------------------------------------------------


def test_one_broken_model_among_several_is_reported_and_the_others_serve(
    tmp_path, versions, refs, caplog
):
    root = repository(tmp_path, versions, alpha_1="a", broken_1="a", gamma_1="b", gamma_2="b")
    bad = corrupt_graph(root / "broken" / "1")
    unloadable_graph(root / "gamma" / "2")
    with running_server(root) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        assert served_versions(stub) == [("alpha", 1), ("gamma", 1)]
        assert serves(stub, refs["a"]) == 1  # alpha: the default, first by name
        assert serves(stub, refs["b"], model="gamma") == 1  # gamma's highest that loads
        with pytest.raises(grpc.RpcError) as err:
            sample(stub, model="broken")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "['alpha', 'gamma']" in err.value.details()
        metrics = scrape(srv.metrics_url)
        assert metrics["vaeserve_model_errors"] == 2
        for folder in (root / "broken" / "1", root / "gamma" / "2"):  # named for alerts
            assert metrics[f'vaeserve_model_version_broken{{directory="{folder}"}}'] == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(str(bad) in e and "sha256 does not match" in e for e in errors), errors
    assert any(
        str(root / "gamma" / "2") in e and "ONNX Runtime cannot load it" in e for e in errors
    ), errors


def serve_refused(root: Path, tmp_path: Path) -> tuple[int, str]:
    """Start `vaeserve serve` on a broken repository: (exit status, its stderr)."""
    cmd = [
        sys.executable, "-c", SERVE_CODE, "serve", "--repository", str(root), "--host",
        "127.0.0.1", "--port", "0", "--metrics-port", "0", "--providers", "cpu",
        "--port-file", str(tmp_path / "never.json"),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert not (tmp_path / "never.json").exists(), "the server started"
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr


@pytest.mark.slow
def test_a_repository_with_nothing_servable_is_refused_naming_the_file(tmp_path, versions):
    root = repository(tmp_path, versions, tiny_1="a", tiny_2="b")
    missing = root / "tiny" / "1" / "encoder.onnx"
    missing.unlink()
    corrupt = corrupt_graph(root / "tiny" / "2")
    status, stderr = serve_refused(root, tmp_path)
    last = stderr.strip().splitlines()[-1]
    assert status == 1
    assert f"{missing}: missing (encoder graph of tiny v1)" in last
    assert f"{corrupt}: sha256 does not match model.json" in last

    shutil.rmtree(root / "tiny" / "2")
    copy_version(versions["a"], root, "tiny", 1)
    unloadable = unloadable_graph(root / "tiny" / "1")
    status, stderr = serve_refused(root, tmp_path)
    last = stderr.strip().splitlines()[-1]
    assert status == 1 and "no model version could be loaded" in last
    assert "ONNX Runtime cannot load it" in last and str(unloadable.parent) in last

    empty = tmp_path / "empty"
    empty.mkdir()
    status, stderr = serve_refused(empty, tmp_path)
    assert status == 1 and "no servable model" in stderr.strip().splitlines()[-1]
    status, stderr = serve_refused(tmp_path / "nowhere", tmp_path)
    assert status == 1 and "does not exist" in stderr.strip().splitlines()[-1]
