"""Hostile callers against a real server (grpc.aio on a loopback port, real ONNX Runtime sessions
on the tiny model, generated stubs): streams that are never read, small callers behind big ones,
bodies protobuf cannot parse, calls without a token, megabyte names, the largest offsets.

Each test here failed on the code before docs/reliability.md's second round (round two of the
hostile tests); the process-level floods are in test_hostile_process.py and `make chaos`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from vaeserve.service.config import Settings
from vaeserve.service.grpc.tensors import to_tensor
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import running_server
from .reliability import metric_sum

SMALL_WINDOW = [("grpc.http2.bdp_probe", 0)]  # the client's window stays at 64 KiB
DECODER = 'graph="decoder"'
CHUNK = 32  # rows of the tiny model per streamed chunk (18.8 KB with latents)


def metrics_of(srv) -> dict[str, float]:
    values = {}
    for line in srv.server.metrics.exposition().decode().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


def decoded_rows(srv) -> float:
    return metric_sum(metrics_of(srv), "vaeserve_batch_size_sum", DECODER)


def wait_until_still(srv, timeout: float = 20.0) -> float:
    """Decoder rows once they stop changing (the stream's computing has stopped)."""
    last, deadline = -1.0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.25)
        rows = decoded_rows(srv)
        if rows == last:
            return rows
        last = rows
    raise AssertionError(f"still computing after {timeout}s")


# --- 1 and 2: streams that are not read ----------------------------------------------------


def unread_stream_rows(repository: Path, prefetch: int, stall_s: float = 60.0) -> float:
    """Rows one never-read SampleStream makes the server compute, with a 64 KiB window."""
    with (
        running_server(repository, stream_prefetch=prefetch, stream_stall_s=stall_s) as srv,
        grpc.insecure_channel(srv.target, options=SMALL_WINDOW) as channel,
    ):
        before = decoded_rows(srv)
        call = vae_pb2_grpc.VaeServiceStub(channel).SampleStream(
            pb.SampleRequest(n=5000, seed=1, chunk_size=CHUNK), timeout=60
        )
        rows = wait_until_still(srv) - before
        call.cancel()
    return rows


def test_a_stream_computes_exactly_stream_prefetch_chunks_ahead_of_the_transport(tiny_repository):
    """The same unread stream, with the same client window, computes exactly K more chunks with
    stream_prefetch K than with 0: the server never runs further ahead of what the transport
    took (what the client's flow-control window holds is the client's setting)."""
    none = unread_stream_rows(tiny_repository, 0)
    three = unread_stream_rows(tiny_repository, 3)
    print(f"unread stream: {none / CHUNK:g} chunks computed at prefetch 0, {three / CHUNK:g} at 3")
    assert three - none == 3 * CHUNK
    assert none <= 8 * CHUNK  # the 64 KiB window (3 chunks), the blocked one, nothing more


def test_a_stalled_stream_forgets_its_prefetch_and_resumes_bit_exact(tiny_repository):
    """A client stops reading for longer than stream_stall_s: the chunks computed ahead are
    dropped (memory back), and when it reads again they are recomputed, bit for bit."""
    with (
        running_server(tiny_repository, stream_prefetch=4, stream_stall_s=0.3) as srv,
        grpc.insecure_channel(srv.target, options=SMALL_WINDOW) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        n = 20 * CHUNK
        before = decoded_rows(srv)
        stream = stub.SampleStream(pb.SampleRequest(n=n, seed=9, chunk_size=CHUNK), timeout=60)
        first = next(stream)
        wait_until_still(srv)
        time.sleep(0.6)  # stalled past stream_stall_s: the 4 chunks ahead are forgotten
        rest = list(stream)
        computed = decoded_rows(srv) - before
        again = stub.SampleStream(pb.SampleRequest(n=n, seed=9, chunk_size=CHUNK), timeout=30)
        whole = b"".join(c.images.data for c in again)  # read at once: nothing stalls
    got = b"".join(c.images.data for c in [first, *rest])
    assert got == whole  # the same bytes as a stream read without pause
    print(f"{n} rows served, {computed:g} computed ({(computed - n) / CHUNK:g} chunks again)")
    assert computed == n + 4 * CHUNK  # exactly the forgotten chunks, computed a second time


def test_a_small_request_is_served_before_queued_big_ones(tiny_repository):
    """100 Sample(n=200) requests (7 pieces each) are queued, then one Sample(n=4) arrives: the
    batcher is fair between callers, so the small one is answered before most of the big ones,
    not after all of them (first come, first served)."""
    with (
        running_server(tiny_repository, max_delay_ms=0.0) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        done: list[tuple[str, float]] = []
        lock = threading.Lock()

        def finished(kind: str):
            def record(_future: grpc.Future) -> None:
                with lock:
                    done.append((kind, time.monotonic()))

            return record

        big = []
        for i in range(100):
            request = pb.SampleRequest(n=200, seed=i, format=pb.IMAGE_FORMAT_UINT8)
            future = stub.Sample.future(request, timeout=60)
            future.add_done_callback(finished("big"))
            big.append(future)
        time.sleep(0.05)
        small = stub.Sample.future(pb.SampleRequest(n=4, seed=1), timeout=60)
        small.add_done_callback(finished("small"))
        small.result()
        for future in big:
            future.result()
    order = [kind for kind, _ in sorted(done, key=lambda d: d[1])]
    ahead = order.index("small")
    print(f"the small request finished after {ahead} of 100 big ones")
    assert ahead < 60


# --- 4: bodies that protobuf cannot parse, and authentication before parsing -----------------

METHODS = {
    "Encode": (pb.EncodeRequest, False),
    "Decode": (pb.DecodeRequest, False),
    "Sample": (pb.SampleRequest, False),
    "SampleStream": (pb.SampleRequest, True),
    "GetModelInfo": (pb.GetModelInfoRequest, False),
    "Interpolate": (pb.InterpolateRequest, False),
    "ListConcepts": (pb.ListConceptsRequest, False),
    "Edit": (pb.EditRequest, False),
}


def garbage(seed: int) -> list[bytes]:
    """Bodies that are not valid protobuf: random bytes, truncated messages, bad wire types."""
    rng = np.random.default_rng(seed)
    valid = pb.SampleRequest(n=3, seed=5, model="tiny", concept="label:1").SerializeToString()
    bodies = [rng.bytes(int(rng.integers(1, 64))) for _ in range(30)]
    bodies += [valid[:k] for k in range(1, len(valid))]  # truncated
    bodies += [b"\x0f", b"\x0b\x0c", b"\x0a\xff\xff\xff\xff\x0f", b"\x08\x80\x80\x80"]
    return bodies


def undecodable(message_type: type, body: bytes) -> bool:
    try:
        message_type.FromString(body)
    except Exception:
        return True
    return False


def raw_call(channel: grpc.Channel, method: str, stream: bool) -> object:
    path = f"/vaeserve.v1.VaeService/{method}"
    if stream:
        call = channel.unary_stream(path)
        return lambda body, **kw: list(call(body, **kw))
    return channel.unary_unary(path)


def test_undecodable_bodies_are_invalid_argument_counted_and_logged_quietly(
    tiny_repository, caplog
):
    with (
        running_server(tiny_repository) as srv,
        grpc.insecure_channel(srv.target) as channel,
        caplog.at_level(logging.WARNING),
    ):
        sent = 0
        for method, (message_type, stream) in METHODS.items():
            call = raw_call(channel, method, stream)
            bodies = [b for b in garbage(len(method)) if undecodable(message_type, b)]
            for body in bodies:
                with pytest.raises(grpc.RpcError) as err:
                    call(body, timeout=10)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, body)
                assert err.value.details() == (
                    f"request is not a valid {message_type.DESCRIPTOR.full_name}"
                )
            sent += len(bodies)
            counted = metric_sum(metrics_of(srv), "vaeserve_requests_total", method, "INVALID_A")
            assert counted == len(bodies), method
        reply = vae_pb2_grpc.VaeServiceStub(channel).Sample(pb.SampleRequest(n=2), timeout=10)
        assert reply.images.shape == [2, 1, 12, 12]  # and the server serves on
    records = [r for r in caplog.records if r.name.startswith(("vaeserve", "grpc"))]
    print(f"{sent} undecodable bodies: {len(records)} log records")
    assert sent >= 300
    assert all(r.levelno <= logging.WARNING and r.exc_info is None for r in records)
    assert len(records) <= 2  # rate-limited: one line per interval, not one per request
    assert all("DecodeError" not in r.getMessage() for r in records)


def test_a_call_without_a_token_is_refused_before_its_body_is_read(tiny_repository, tmp_path):
    """On a token-protected server, a body over the message limit and a body protobuf cannot
    parse, both without a token, get UNAUTHENTICATED: the body was never received or parsed
    (before, the first got RESOURCE_EXHAUSTED from the transport and the second UNKNOWN)."""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with (
        running_server(tiny_repository, auth_token_file=token) as srv,
        grpc.insecure_channel(srv.target, options=[("grpc.max_send_message_length", -1)]) as ch,
    ):
        for method, (message_type, stream) in METHODS.items():
            call = raw_call(ch, method, stream)
            over_limit = message_type(model="m" * 200_000).SerializeToString()  # limit 100 KB
            for body in (over_limit, b"\x0f\xff", b""):
                with pytest.raises(grpc.RpcError) as err:
                    call(body, timeout=10)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, (method, len(body))
        counted = metric_sum(metrics_of(srv), "vaeserve_requests_total", "UNAUTHENTICATED")
        assert counted == 3 * len(METHODS)


# --- 5: never echo unbounded input ----------------------------------------------------------

MB = "n" * (1 << 20)
IMAGE = to_tensor(np.zeros((1, 1, 12, 12), np.float32))
LATENT = to_tensor(np.zeros((1, 3), np.float32))


def huge_values() -> list[tuple[str, object, grpc.StatusCode]]:
    """A 1 MB name, concept or label in every string field of every RPC, and 100,000-dim
    shapes in every tensor, each with the code it must get."""
    nf, bad = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[str, object, grpc.StatusCode]] = [
        ("Encode", pb.EncodeRequest(model=MB, images=IMAGE), nf),
        ("Decode", pb.DecodeRequest(model=MB, latents=LATENT), nf),
        ("Sample", pb.SampleRequest(model=MB, n=1), nf),
        ("SampleStream", pb.SampleRequest(model=MB, n=1), nf),
        ("GetModelInfo", pb.GetModelInfoRequest(model=MB), nf),
        ("ListConcepts", pb.ListConceptsRequest(model=MB), nf),
        ("Interpolate", pb.InterpolateRequest(model=MB, steps=2), nf),
        ("Edit", pb.EditRequest(model=MB, images=IMAGE, alphas=[1.0]), nf),
    ]
    for concept in (MB, f"label:{MB}", f"{MB}-{MB}", f"label:{MB}-label:3"):
        cases += [
            ("Sample", pb.SampleRequest(n=1, concept=concept), bad),
            ("SampleStream", pb.SampleRequest(n=1, concept=concept), bad),
            ("Edit", pb.EditRequest(images=IMAGE, alphas=[1.0], concept=concept), bad),
        ]
    wide = pb.Tensor(shape=[1] * 100_000, dtype=pb.DTYPE_FLOAT32, data=b"\0" * 4)
    cases += [
        ("Encode", pb.EncodeRequest(images=wide), bad),
        ("Decode", pb.DecodeRequest(latents=wide), bad),
        ("Interpolate", pb.InterpolateRequest(start_latent=wide, end_latent=LATENT, steps=2), bad),
        ("Edit", pb.EditRequest(images=wide, alphas=[1.0], concept="label:1"), bad),
    ]
    return cases


def test_no_error_message_echoes_unbounded_input(tmp_path, tiny_repository):
    from .reliability import copy_version

    root = tmp_path / "repo"
    copy_version(tiny_repository / "tiny" / "1", root, "tiny", 1)
    write_concepts(root / "tiny" / "1")
    with (
        running_server(root, max_message_bytes=8 << 20) as srv,
        grpc.insecure_channel(srv.target, options=[("grpc.max_send_message_length", -1)]) as ch,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(ch)
        for method, request, code in huge_values():
            call = getattr(stub, method)
            with pytest.raises(grpc.RpcError) as err:
                result = call(request, timeout=20)
                if method == "SampleStream":
                    list(result)
            details = err.value.details() or ""
            assert err.value.code() == code, (method, err.value.code(), details[:200])
            assert len(details) < 600, (method, len(details))
            assert "characters)" in details or "items)" in details, details


def write_concepts(version_dir: Path) -> None:
    """A concepts.json for the tiny model (labels 1 and 3), so concept lookups are reached."""
    meta = json.loads((version_dir / "model.json").read_text())
    label = {"count": 10, "mean": [0.0, 0.0, 0.0], "covariance": np.eye(3).tolist()}
    document = {
        "format": "vaeserve-concepts/1",
        "model": {"encoder_sha256": meta["graphs"]["encoder"]["sha256"]},
        "overall": {"count": 20, "mean": [0.5, 0.0, 0.0]},
        "labels": {"1": label, "3": {**label, "mean": [1.0, 0.0, 0.0]}},
        "vectors": {},
    }
    (version_dir / "concepts.json").write_text(json.dumps(document))


# --- 6: the largest offsets, client retries, automatic batch size ------------------------------


def test_offset_plus_n_at_2_63_is_invalid(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.Sample(pb.SampleRequest(n=1, offset=2**63 - 1), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "2**63" in err.value.details()
    last = stub.Sample(pb.SampleRequest(n=1, offset=2**63 - 2, seed=3), timeout=10)
    assert last.offset == 2**63 - 2  # the last row there is


class _Error(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_the_client_retries_what_the_server_cancelled_not_what_it_cancelled_itself():
    from vaeserve.service.client.client import retryable

    assert retryable(_Error(grpc.StatusCode.UNAVAILABLE, "server is shutting down"))
    assert retryable(_Error(grpc.StatusCode.CANCELLED, "CANCELLED"))
    assert not retryable(_Error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!"))
    assert not retryable(_Error(grpc.StatusCode.INVALID_ARGUMENT, "n: got 0"))


def test_max_batch_size_0_is_64_on_the_cpu_and_256_on_a_gpu(tiny_repository):
    settings = Settings(max_batch_size=0)
    assert (settings.resolved_max_batch_size(False), settings.resolved_max_batch_size(True)) == (
        64,
        256,
    )
    assert Settings(max_batch_size=8).resolved_max_batch_size(True) == 8
    with (
        running_server(tiny_repository, max_batch_size=0, providers="cpu") as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        info = vae_pb2_grpc.VaeServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest())
    assert info.limits.max_batch_size == 64
