"""Access control with real certificates made in the test: TLS, mutual TLS, bearer tokens, what
stays open (health, reflection), turning reflection and metrics off, the client and `vaeserve
generate` on a secured server, no secrets in the log, and bad security settings at start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from vaeserve.service.client import VaeClient
from vaeserve.service.grpc.tensors import to_tensor
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import SERVE_CODE, running_server, serve_process
from .reliability import Pki, listening_sockets, listening_tcp_ports, make_pki
from .test_service_rpcs import scrape

TOKEN = "s3cret-Token_0123456789abcdef"
WRONG = "wr0ng-Token_fedcba9876543210"
StatusCode = grpc.StatusCode
UNAUTHENTICATED = StatusCode.UNAUTHENTICATED
READY = health_pb2.HealthCheckRequest(service="vaeserve.v1.VaeService")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")  # a trailing newline, as `echo` and Secrets write it
    return path


def tls_channel(target: str, pki: Pki, *, root: str = "ca", client: str | None = None):
    """A TLS channel verifying the server by `root`, presenting `client` (e.g. "client") if set."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.read(root),
        private_key=pki.read(f"{client}_key") if client else None,
        certificate_chain=pki.read(f"{client}_cert") if client else None,
    )
    return grpc.secure_channel(target, credentials)


def fails_to_connect(channel: grpc.Channel) -> grpc.RpcError:
    """The RpcError of a call that cannot get through the handshake."""
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    return err.value


def sample_ok(channel: grpc.Channel, metadata=None) -> None:
    reply = vae_pb2_grpc.VaeServiceStub(channel).Sample(
        pb.SampleRequest(n=2, seed=1), timeout=10, metadata=metadata
    )
    assert list(reply.images.shape) == [2, 1, 12, 12]


# --- TLS and mutual TLS ---------------------------------------------------------------------


def test_tls_serves_verified_clients_and_refuses_plaintext(tiny_repository, pki):
    with running_server(tiny_repository, tls_cert=pki.server_cert, tls_key=pki.server_key) as srv:
        for host in ("127.0.0.1", "localhost"):  # both are in the certificate's names
            with tls_channel(f"{host}:{srv.port}", pki) as channel:
                sample_ok(channel)
                assert health_pb2_grpc.HealthStub(channel).Check(READY, timeout=5).status == 1
        with grpc.insecure_channel(srv.target) as plaintext:
            fails_to_connect(plaintext)
        with tls_channel(srv.target, pki, root="other_ca") as untrusted:  # wrong server CA
            fails_to_connect(untrusted)


def test_mutual_tls_needs_a_client_certificate_from_the_ca(tiny_repository, pki):
    settings = {
        "tls_cert": pki.server_cert,
        "tls_key": pki.server_key,
        "tls_client_ca": pki.ca,
    }
    with running_server(tiny_repository, **settings) as srv:
        with tls_channel(srv.target, pki, client="client") as channel:
            sample_ok(channel)
        with tls_channel(srv.target, pki) as anonymous:
            fails_to_connect(anonymous)
        with tls_channel(srv.target, pki, client="other_client") as stranger:
            fails_to_connect(stranger)
        with grpc.insecure_channel(srv.target) as plaintext:
            fails_to_connect(plaintext)
        with tls_channel(srv.target, pki, client="client") as channel:  # still serving
            sample_ok(channel)


# --- bearer token ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(tiny_repository, token_file) -> Iterator:
    with running_server(tiny_repository, auth_token_file=token_file) as srv:
        yield srv


BAD_CREDENTIALS = [
    pytest.param(None, "missing credentials", id="missing"),
    pytest.param([("authorization", f"Bearer {WRONG}")], "invalid bearer token", id="wrong"),
    pytest.param([("authorization", f"Bearer {TOKEN}x")], "invalid bearer token", id="longer"),
    pytest.param([("authorization", f"Bearer {TOKEN[:-1]}")], "invalid bearer token", id="prefix"),
    pytest.param([("authorization", "Bearer ")], "invalid bearer token", id="empty"),
    pytest.param([("authorization", f"Basic {TOKEN}")], "malformed", id="basic-scheme"),
    pytest.param([("authorization", TOKEN)], "malformed", id="no-scheme"),
    pytest.param(
        [("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {WRONG}")],
        "malformed",
        id="two-headers",
    ),
    pytest.param([("x-token", TOKEN)], "missing credentials", id="other-header"),
]


def service_calls(channel: grpc.Channel, metadata) -> dict[str, Callable[[], object]]:
    """One call per VaeService method, read from the proto (so new RPCs are covered too), with a
    request that is well-formed where the method's checks need one and empty otherwise."""
    good = {
        "Encode": pb.EncodeRequest(images=to_tensor(np.zeros((1, 1, 12, 12), np.float32))),
        "Decode": pb.DecodeRequest(latents=to_tensor(np.zeros((1, 3), np.float32))),
        "Sample": pb.SampleRequest(n=1),
        "SampleStream": pb.SampleRequest(n=3),
    }
    calls = {}
    for method in pb.DESCRIPTOR.services_by_name["VaeService"].methods:
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        request = good.get(method.name, request_type())
        kind = channel.unary_stream if method.server_streaming else channel.unary_unary
        rpc = kind(
            f"/vaeserve.v1.VaeService/{method.name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        if method.server_streaming:
            calls[method.name] = lambda rpc=rpc, r=request: list(
                rpc(r, timeout=10, metadata=metadata)
            )
        else:
            calls[method.name] = lambda rpc=rpc, r=request: rpc(r, timeout=10, metadata=metadata)
    return calls


@pytest.mark.parametrize(("metadata", "message"), BAD_CREDENTIALS)
def test_bad_or_missing_token_is_unauthenticated(token_server, metadata, message):
    """Every VaeService method, unary and streaming, refuses; the message never echoes what was
    sent (or the real token)."""
    with grpc.insecure_channel(token_server.target) as channel:
        calls = service_calls(channel, metadata)
        assert len(calls) >= 5
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == UNAUTHENTICATED, name
            details = err.value.details()
            assert message in details
            assert TOKEN not in details and WRONG not in details and TOKEN[:8] not in details


def test_every_method_is_served_with_the_right_token(token_server):
    """The same calls with the token get past authentication (OK, or a request-level status for
    the methods called with an empty request here)."""
    with grpc.insecure_channel(token_server.target) as channel:
        for name, call in service_calls(channel, [("authorization", f"Bearer {TOKEN}")]).items():
            try:
                call()
            except grpc.RpcError as err:
                assert err.code() not in (UNAUTHENTICATED, StatusCode.INTERNAL, StatusCode.UNKNOWN)
                assert name not in ("Encode", "Decode", "Sample", "SampleStream", "GetModelInfo")


def test_right_token_is_served_and_health_and_reflection_stay_open(token_server):
    metrics_before = scrape(token_server.metrics_url)
    with grpc.insecure_channel(token_server.target) as channel:
        sample_ok(channel, metadata=[("authorization", f"Bearer {TOKEN}")])
        sample_ok(channel, metadata=[("authorization", f"bearer {TOKEN}")])  # scheme: any case
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(READY, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        services = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for reply in services for s in reply.list_services_response.service}
        assert "vaeserve.v1.VaeService" in names
        with pytest.raises(grpc.RpcError) as err:
            sample_ok(channel)
        assert err.value.code() == UNAUTHENTICATED
    metrics = scrape(token_server.metrics_url)
    key = 'vaeserve_requests_total{code="UNAUTHENTICATED",method="Sample"}'
    assert metrics.get(key, 0) - metrics_before.get(key, 0) == 1  # refused calls are counted


def test_client_with_mutual_tls_and_token(tiny_repository, pki, token_file):
    settings = {
        "tls_cert": pki.server_cert,
        "tls_key": pki.server_key,
        "tls_client_ca": pki.ca,
        "auth_token_file": token_file,
    }
    secure = {
        "root_certificates": pki.read("ca"),
        "client_certificate": pki.read("client_cert"),
        "client_key": pki.read("client_key"),
    }
    with running_server(tiny_repository, **settings) as srv:
        with VaeClient(f"localhost:{srv.port}", token=TOKEN, **secure) as client:
            images = client.sample(4, seed=3).images
            posterior = client.encode(images)
            assert client.decode(posterior.z_mean).shape == (4, 1, 12, 12)
            chunks = list(client.sample_stream(10, seed=3, chunk_size=4, format="float32"))
            assert np.array_equal(np.concatenate([c.images for c in chunks])[:4], images)
        with VaeClient(srv.target, token=WRONG, retries=0, **secure) as client:
            with pytest.raises(grpc.RpcError) as err:
                client.sample(1)
            assert err.value.code() == UNAUTHENTICATED


# --- reflection and metrics off -------------------------------------------------------------


def reflection_services(channel: grpc.Channel) -> set[str]:
    replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    return {s.name for reply in replies for s in reply.list_services_response.service}


def test_reflection_can_be_turned_off(tiny_repository):
    with (
        running_server(tiny_repository, reflection=False) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        with pytest.raises(grpc.RpcError) as err:
            reflection_services(channel)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        sample_ok(channel)  # the service itself is there
    with (
        running_server(tiny_repository, reflection=True) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        assert "vaeserve.v1.VaeService" in reflection_services(channel)


@pytest.mark.slow
def test_metrics_port_off_and_on(tiny_repository, tmp_path):
    """--metrics-port 0: the process listens on its gRPC port only; -1: on a second port that
    answers /metrics."""
    (tmp_path / "off").mkdir()
    with serve_process(tiny_repository, tmp_path / "off", "--metrics-port", "0") as srv:
        assert srv.metrics_port == 0
        assert listening_tcp_ports(srv.process.pid) == {srv.port}
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0
    (tmp_path / "on").mkdir()
    with serve_process(tiny_repository, tmp_path / "on", "--metrics-port", "-1") as srv:
        assert srv.metrics_port > 0
        assert listening_tcp_ports(srv.process.pid) == {srv.port, srv.metrics_port}
        url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert b"vaeserve_ready 1.0" in reply.read()
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("host", "address"), [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("[::1]", "::1")]
)
def test_binds_where_it_is_told(tiny_repository, host, address):
    """gRPC and /metrics listen on the configured address only (IPv6 with or without brackets)."""
    if ":" in address and not ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    with running_server(tiny_repository, host=host, metrics_port=-1) as srv:
        assert srv.server is not None
        sockets = listening_sockets(os.getpid())  # the server runs in this process
        assert {a for a, port in sockets if port == srv.port} == {address}
        assert {a for a, port in sockets if port == srv.server.metrics_port} == {address}
        name = f"[{address}]" if ":" in address else address
        with grpc.insecure_channel(f"{name}:{srv.port}") as channel:
            sample_ok(channel)
        url = f"http://{name}:{srv.server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert b"vaeserve_ready 1.0" in reply.read()


# --- a real secured process: generate, and no secrets in the log ----------------------------


@pytest.mark.slow
def test_generate_against_mutual_tls_and_token_and_no_secrets_logged(
    tiny_repository, pki, token_file, tmp_path
):
    flags = (
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca), "--auth-token-file", str(token_file),
        "--log-level", "DEBUG",
    )  # fmt: skip
    with serve_process(tiny_repository, tmp_path, *flags) as srv:
        target = f"localhost:{srv.port}"
        cmd = [
            sys.executable, "-m", "vaeserve", "generate", "--target", target, "--n", "40",
            "--out", str(tmp_path / "out"), "--seed", "5", "--quiet", "--grid-max", "0",
            "--root-cert", str(pki.ca), "--client-cert", str(pki.client_cert),
            "--client-key", str(pki.client_key),
        ]  # fmt: skip
        ok = subprocess.run(
            [*cmd, "--token-file", str(token_file)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["written"] == 40
        assert len(list((tmp_path / "out").glob("*.png"))) == 40

        wrong = tmp_path / "wrong-token"
        wrong.write_text(WRONG)
        refused = subprocess.run(
            [*cmd, "--token-file", str(wrong)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert refused.returncode == 1
        assert "UNAUTHENTICATED" in refused.stderr and WRONG not in refused.stderr

        with (
            tls_channel(target, pki, client="client") as channel,
            pytest.raises(grpc.RpcError),
        ):  # a raw call with the wrong token
            sample_ok(channel, metadata=[("authorization", f"Bearer {WRONG}")])
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0
    log = srv.log.read_text()
    assert "mutual TLS" in log and "bearer token required" in log  # it did run secured
    assert "DEBUG" in log  # the most verbose level, and still:
    assert TOKEN not in log and WRONG not in log
    key_body = [
        line for line in pki.read("server_key").decode().splitlines() if "-----" not in line
    ]
    assert key_body and not any(line in log for line in key_body)
    assert "Traceback" not in log


# --- bad settings fail at start -------------------------------------------------------------


def serve_fails(repository: Path, tmp_path: Path, *flags: str) -> tuple[int, str]:
    """Run `vaeserve serve` expecting it to refuse to start: (exit status, last stderr line)."""
    cmd = [
        sys.executable, "-c", SERVE_CODE, "serve", "--repository", str(repository),
        "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--providers", "cpu",
        "--port-file", str(tmp_path / "never.json"), *flags,
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert not (tmp_path / "never.json").exists(), "the server started"
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_bad_security_settings_fail_at_start_with_one_line(tiny_repository, pki, tmp_path):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    broken_pem = tmp_path / "broken.pem"
    broken_pem.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    spaced = tmp_path / "spaced-token"
    spaced.write_text(f"{TOKEN} {TOKEN}\n")
    missing = tmp_path / "missing"
    encrypted = tmp_path / "encrypted.key"
    private = serialization.load_pem_private_key(pki.read("server_key"), None)
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    cert, key = str(pki.server_cert), str(pki.server_key)
    cases = [
        ((("--tls-cert", cert)), 2, "tls_cert and tls_key go together"),
        ((("--tls-key", key)), 2, "tls_cert and tls_key go together"),
        (("--tls-client-ca", str(pki.ca)), 2, "needs tls_cert and tls_key"),
        (("--tls-cert", cert, "--tls-key", str(missing)), 1, f"tls_key {missing}: cannot read"),
        (("--tls-cert", str(not_pem), "--tls-key", key), 1, "not a PEM file"),
        (("--tls-cert", str(broken_pem), "--tls-key", key), 1, "not a usable certificate"),
        (
            ("--tls-cert", cert, "--tls-key", str(pki.client_key)),
            1,
            f"tls_key {pki.client_key} is not the private key of tls_cert {cert}",
        ),
        (("--tls-cert", cert, "--tls-key", str(encrypted)), 1, "encrypted private keys"),
        (
            ("--tls-cert", cert, "--tls-key", key, "--tls-client-ca", str(broken_pem)),
            1,
            "tls_client_ca",
        ),
        (("--auth-token-file", str(missing)), 1, f"auth_token_file {missing}: cannot read"),
        (("--auth-token-file", str(empty)), 1, "the file is empty"),
        (("--auth-token-file", str(spaced)), 1, "printable ASCII without spaces"),
    ]
    for flags, code, message in cases:
        status, line = serve_fails(tiny_repository, tmp_path, *flags)
        assert (status, message in line) == (code, True), (flags, status, line)
        assert TOKEN not in line and "PRIVATE KEY" not in line
