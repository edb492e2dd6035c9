"""Host and port helpers shared by the single server and the workers' parent, which imports
neither grpc nor ONNX Runtime."""

from __future__ import annotations

import json
import os
from pathlib import Path


def grpc_address(host: str, port: int) -> str:
    """HOST:PORT for gRPC, an IPv6 host in brackets ("::1" or "[::1]" -> "[::1]:PORT")."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def http_host(host: str) -> str:
    """The host without IPv6 brackets, as sockets and the metrics HTTP server take it."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def write_port_file(path: Path, port: int, metrics_port: int) -> None:
    """Write the bound ports as JSON, atomically (readers never see a half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"port": port, "metrics_port": metrics_port}) + "\n")
    tmp.replace(path)
