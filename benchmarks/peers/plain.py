"""The Python floor: a bare grpc.aio VaeService (Decode and GetModelInfo only) on the decoder.

No batching, no interceptors, no metrics, no validation beyond numpy's: each request is one
session.run in a worker thread. Whatever vaeserve costs above this is its own machinery.
`python -m benchmarks.peers.plain --port-file PATH [--threads 2]` writes {"port": N} once it
listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

import grpc
import numpy as np

from benchmarks.inprocess import session as open_session
from vaeserve.service.repository import ModelRepository, bundled_repository
from vaeserve.service.runtime import GraphSession
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

MESSAGE_BYTES = 64 * 1024 * 1024


class Plain(vae_pb2_grpc.VaeServiceServicer):
    """Decode as numpy frombuffer -> session.run in a thread -> tobytes."""

    def __init__(self, decoder: GraphSession, latent_dim: int, image_shape: tuple[int, ...]):
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.image_shape = image_shape

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        return pb.GetModelInfoResponse(latent_dim=self.latent_dim, image_shape=self.image_shape)

    async def Decode(
        self, request: pb.DecodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecodeResponse:
        z = np.frombuffer(request.latents.data, dtype="<f4").reshape(tuple(request.latents.shape))
        images = (await asyncio.to_thread(self.decoder.run, z))[0]
        tensor = pb.Tensor(
            shape=images.shape, dtype=pb.DTYPE_FLOAT32, data=images.astype("<f4").tobytes()
        )
        return pb.DecodeResponse(images=tensor)


async def serve(port_file: Path, threads: int) -> None:
    spec = ModelRepository(bundled_repository()).scan().resolve()
    decoder = open_session(spec, "decoder", threads, None)
    decoder.run(np.zeros((1, spec.latent_dim), dtype=np.float32))  # first runs allocate
    options = [
        ("grpc.max_receive_message_length", MESSAGE_BYTES),
        ("grpc.max_send_message_length", MESSAGE_BYTES),
    ]
    server = grpc.aio.server(options=options)
    vae_pb2_grpc.add_VaeServiceServicer_to_server(
        Plain(decoder, spec.latent_dim, spec.image_shape), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": port}))
    tmp.replace(port_file)  # readers never see a half-written file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(serve(args.port_file, args.threads))


if __name__ == "__main__":
    main()
