"""Helpers of the reliability tests: a process's memory and listening ports from /proc, waiting
for a condition, metric sums from a scrape, and test certificates (a CA, server and client)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaeserve.service import rng
from vaeserve.service.grpc.tensors import to_tensor
from vaeserve.v1 import vae_pb2 as pb


def proc_status_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory field of /proc/PID/status (VmRSS: resident now; VmHWM: the peak), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {what}"
        time.sleep(0.02)


def metric_sum(metrics: dict[str, float], name: str, *labels: str) -> float:
    """Sum of a metric's series whose labels contain every string in `labels`."""
    return sum(
        value
        for key, value in metrics.items()
        if (key == name or key.startswith(name + "{")) and all(label in key for label in labels)
    )


# --- certificates (TLS tests make their own, with `cryptography`) ---------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA, a server certificate for localhost/127.0.0.1/::1, a client
    certificate from the same CA, and a second, unrelated CA with its own client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path

    def read(self, name: str) -> bytes:
        path: Path = getattr(self, name)
        return path.read_bytes()


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: Any,
    issuer: tuple[str, Any] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> Any:
    """A certificate for `key`, self-signed when `issuer` (name, key) is None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (subject, key) if issuer is None else issuer
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        san = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """Write a fresh CA, server and client certificates (and an unrelated CA) into `folder`."""
    from cryptography.hazmat.primitives import serialization

    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, obj: Any) -> Path:
        path = folder / name
        if hasattr(obj, "private_bytes"):
            data = obj.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        else:
            data = obj.public_bytes(serialization.Encoding.PEM)
        path.write_bytes(data)
        return path

    ca_key, other_key = _key(), _key()
    ca = _cert("vaeserve test CA", ca_key, None, ca=True)
    other = _cert("unrelated test CA", other_key, None, ca=True)
    server_key, client_key, other_client_key = _key(), _key(), _key()
    signed_by_ca = ("vaeserve test CA", ca_key)
    return Pki(
        ca=write("ca.pem", ca),
        server_cert=write("server.pem", _cert("localhost", server_key, signed_by_ca, server=True)),
        server_key=write("server.key", server_key),
        client_cert=write("client.pem", _cert("test client", client_key, signed_by_ca)),
        client_key=write("client.key", client_key),
        other_ca=write("other-ca.pem", other),
        other_client_cert=write(
            "other-client.pem",
            _cert("stranger", other_client_key, ("unrelated test CA", other_key)),
        ),
        other_client_key=write("other-client.key", other_client_key),
    )


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of each TCP socket process `pid` listens on: its socket inodes matched in
    /proc/net/tcp and tcp6 (addresses there are hex, in 32-bit little-endian words)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].rsplit(":", 1)
            raw = b"".join(
                bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8)
            )
            ip = ipaddress.ip_address(raw)
            mapped = getattr(ip, "ipv4_mapped", None)  # gRPC binds IPv4 on dual-stack sockets
            found.add((str(mapped or ip), int(port, 16)))
    return found


def listening_tcp_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on."""
    return {port for _, port in listening_sockets(pid)}


# --- model repositories changed under a running server --------------------------------------


def copy_version(source: Path, root: Path, name: str, version: int) -> Path:
    """Copy the version folder `source` to ROOT/NAME/VERSION (model.json renamed to match) the
    way a deploy tool should: into a hidden folder first, then one rename, so that no scan sees
    half a copy. An existing ROOT/NAME/VERSION is replaced."""
    target = root / name / str(version)
    incoming = root / name / f".incoming-{version}"
    shutil.rmtree(incoming, ignore_errors=True)
    shutil.copytree(source, incoming)
    meta_path = incoming / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["name"], meta["version"] = name, version
    meta_path.write_text(json.dumps(meta, indent=2))
    if target.exists():
        old = root / name / f".old-{version}"
        target.rename(old)
        incoming.rename(target)
        shutil.rmtree(old)
    else:
        incoming.rename(target)
    return target


def corrupt_graph(version_dir: Path, graph: str = "decoder") -> Path:
    """Flip bytes in the middle of a graph: its sha256 no longer matches model.json."""
    path = version_dir / f"{graph}.onnx"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))
    return path


def unloadable_graph(version_dir: Path, graph: str = "decoder") -> Path:
    """Replace a graph by bytes ONNX Runtime cannot read, with model.json's sha256 updated, so
    that only loading it finds the problem."""
    path = version_dir / f"{graph}.onnx"
    path.write_bytes(b"this is not an ONNX graph\n" * 64)
    meta_path = version_dir / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["graphs"][graph]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta, indent=2))
    return path


# --- mixed load on the tiny model (12x12x1, latent 3) ----------------------------------------

MIXED_IMAGES = np.random.default_rng(0).random((6, 1, 12, 12), dtype=np.float32)


def mixed_requests() -> list[tuple[str, object]]:
    """Work for load tests: every method of the tiny model, several sizes and seeds."""
    work: list[tuple[str, object]] = []
    for i in range(6):
        work.append(("Sample", pb.SampleRequest(n=i + 1, seed=100 + i)))
        work.append(("SampleStream", pb.SampleRequest(n=24 + i, seed=200 + i, chunk_size=8)))
        work.append(("Encode", pb.EncodeRequest(images=to_tensor(MIXED_IMAGES[: i + 1]))))
        latents = rng.normal_rows(300 + i, 0, i + 1, 3)
        work.append(("Decode", pb.DecodeRequest(latents=to_tensor(latents))))
    return work


def answer(stub: Any, method: str, request: object) -> bytes:
    """The response's payload bytes (all chunks of a stream, in order)."""
    if method == "SampleStream":
        chunks = list(stub.SampleStream(request, timeout=60))
        return b"".join(c.images.data + c.latents.data for c in chunks)
    reply = getattr(stub, method)(request, timeout=60)
    if method == "Encode":
        return reply.z_mean.data + reply.z_log_var.data
    if method == "Decode":
        return reply.images.data
    return reply.images.data + reply.latents.data


def broken_versions(metrics: dict[str, float]) -> set[str]:
    """The folders a scrape's vaeserve_model_version_broken{directory} lists (value 1)."""
    prefix = 'vaeserve_model_version_broken{directory="'
    return {
        key[len(prefix) : -len('"}')]
        for key, value in metrics.items()
        if key.startswith(prefix) and value == 1
    }
