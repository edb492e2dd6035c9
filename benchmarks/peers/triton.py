"""The PyTriton peer: Triton's dynamic batcher in front of a Python callable running the decoder.

Runs from the peers' venv (nvidia-pytriton), never imports vaeserve. PyTriton starts a
tritonserver child (gRPC, HTTP, metrics) whose Python-backend stub forwards each formed batch to
this process, where `infer` runs ONNX Runtime. `python -m benchmarks.peers.triton --decoder
PATH --port-file PATH` writes {"port", "metrics_port"} (free ports picked here, since Triton
takes no port 0), then serves until SIGTERM.

The stub links the system libpython; run.py puts this interpreter's own LIBDIR first in
LD_LIBRARY_PATH (else "'_thread.RLock' object has no attribute '_recursion_count'" at load).
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from benchmarks.peers.ortsession import Decoder

MODEL = "decoder"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decoder", required=True, help="decoder.onnx")
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=0,
        help="Triton's default: a batch takes what queued while the instance was busy",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    decoder = Decoder(args.decoder, args.threads)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": decoder.run(inputs["z"])}

    ports = {"port": free_port(), "http_port": free_port(), "metrics_port": free_port()}
    config = TritonConfig(
        grpc_address="127.0.0.1",
        http_address="127.0.0.1",
        grpc_port=ports["port"],
        http_port=ports["http_port"],
        metrics_port=ports["metrics_port"],
        log_verbose=0,
    )
    model_config = ModelConfig(
        max_batch_size=args.max_batch_size,
        batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL,
            infer_func=infer,
            inputs=[Tensor(name="z", dtype=np.float32, shape=(decoder.latent_dim,))],
            outputs=[Tensor(name="image", dtype=np.float32, shape=decoder.image_shape)],
            config=model_config,
        )
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports))
        tmp.replace(args.port_file)
        triton.serve()


if __name__ == "__main__":
    main()
