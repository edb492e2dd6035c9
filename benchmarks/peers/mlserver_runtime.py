"""The MLServer peer: a small custom runtime running the decoder, behind adaptive batching.

Runs from the peers' venv (mlserver), never imports vaeserve. `python -m
benchmarks.peers.mlserver_runtime --decoder PATH --port-file PATH` writes settings.json and
decoder/model-settings.json into a temporary folder, picks free ports (MLServer takes no port 0),
writes {"port", "metrics_port"} and replaces itself with `mlserver start FOLDER`: the server's
PID is this process's, so run.py's CPU accounting follows it.

Settings: debug off, parallel_workers 0 (inference in the server process; separate workers would
add a pickling hop per request on a 2-core machine), adaptive batching on (`max_batch_size`
requests or `max_batch_time` seconds, whichever comes first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from prometheus_client import Counter

from benchmarks.peers.ortsession import Decoder

MODEL = "decoder"
ROOT = Path(__file__).resolve().parents[2]  # the repository: on PYTHONPATH for `implementation`


class OrtDecoder(MLModel):
    """decoder.onnx in ONNX Runtime; each formed batch is one session.run in a worker thread (ORT
    releases the GIL), so the event loop keeps reading requests meanwhile."""

    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        uri = self.settings.parameters.uri if self.settings.parameters else None
        self.decoder = Decoder(str(uri), int(extra.get("threads", 2)))
        # prometheus_client's default registry: with parallel_workers 0 MLServer 1.7.1's /metrics
        # serves that one, not the registry `mlserver.register`/`mlserver.log` write to.
        self.runs = Counter("decoder_runs", "ONNX Runtime runs (formed batches)")
        self.rows = Counter("decoder_rows", "Rows decoded")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        z = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        images = await asyncio.to_thread(self.decoder.run, z)
        self.runs.inc()
        self.rows.inc(len(z))
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("image", images)]
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: Path, decoder: str, threads: int, batch: int, batch_time: float) -> dict:
    """settings.json and decoder/model-settings.json in `folder`; returns the ports."""
    ports = {"port": free_port(), "http_port": free_port(), "metrics_port": free_port()}
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "grpc_port": ports["port"],
        "http_port": ports["http_port"],
        "metrics_port": ports["metrics_port"],
        "parallel_workers": 0,
        "grpc_max_message_length": 64 * 1024 * 1024,
        "load_models_at_startup": True,
        "model_repository_root": str(folder),
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    model = {
        "name": MODEL,
        "implementation": "benchmarks.peers.mlserver_runtime.OrtDecoder",
        "max_batch_size": batch,
        "max_batch_time": batch_time,
        "parameters": {"uri": decoder, "extra": {"threads": threads}},
        "inputs": [{"name": "z", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
    }
    (folder / MODEL).mkdir(exist_ok=True)
    (folder / MODEL / "model-settings.json").write_text(json.dumps(model, indent=2))
    return ports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decoder", required=True, help="decoder.onnx")
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--max-batch-time", type=float, default=0.002, help="seconds")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mlserver-peer-"))
    decoder = str(Path(args.decoder).resolve())
    ports = write_config(folder, decoder, args.threads, args.max_batch_size, args.max_batch_time)
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports))
    tmp.replace(args.port_file)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    os.chdir(folder)
    argv = [sys.executable, "-c", "import sys; from mlserver.cli import main; sys.exit(main())"]
    argv += ["start", str(folder)]
    os.execve(sys.executable, argv, {**os.environ, "PYTHONPATH": path})


if __name__ == "__main__":
    main()
