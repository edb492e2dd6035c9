"""Load generator, run in its own process so it never shares the server's event loop.

`python -m benchmarks.loadgen --target HOST:PORT --method decode --batch 1 --concurrency 64
--seconds 3` prints one JSON line: requests, images/s, latency percentiles, errors. With
concurrency 1 it drives the typed `VaeClient` (numpy in and out, as an application would); with
more, that many asyncio callers share one grpc.aio channel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from benchmarks.timing import percentiles
from vaeserve.service.client import VaeClient
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

MESSAGE_BYTES = 64 * 1024 * 1024


def _inputs(method: str, batch: int, latent_dim: int, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    if method == "encode":
        return rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
    return rng.standard_normal((batch, latent_dim)).astype(np.float32)


def run_client(target: str, method: str, batch: int, seconds: float, fmt: str) -> dict[str, Any]:
    """One caller with the typed client, back to back for `seconds`."""
    with VaeClient(target, timeout=60) as client:
        info = client.model_info()
        x = _inputs(method, batch, info.latent_dim, info.image_shape)
        calls: dict[str, Callable[[], object]] = {
            "encode": lambda: client.encode(x),
            "decode": lambda: client.decode(x, format=fmt),  # type: ignore[call-overload]
            "sample": lambda: client.sample(batch, seed=1, format=fmt),  # type: ignore[arg-type]
        }
        call = calls[method]
        call()  # warm-up
        latencies: list[float] = []
        end = time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
    return _summary(latencies, batch, elapsed, 0)


async def run_aio(
    target: str, method: str, batch: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """`concurrency` callers on one channel, each sending its next request when one returns."""
    options = [
        ("grpc.max_receive_message_length", MESSAGE_BYTES),
        ("grpc.max_send_message_length", MESSAGE_BYTES),
    ]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        info = await stub.GetModelInfo(pb.GetModelInfoRequest())
        x = _inputs(method, batch, info.latent_dim, tuple(info.image_shape))
        if method == "encode":
            rpc, request = stub.Encode, pb.EncodeRequest(images=to_tensor(x))
        elif method == "decode":
            rpc, request = stub.Decode, pb.DecodeRequest(latents=to_tensor(x))
        else:
            rpc, request = stub.Sample, pb.SampleRequest(n=batch, seed=1)
        await rpc(request)  # warm-up
        latencies: list[float] = []
        errors = 0
        end = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    reply = await rpc(request, timeout=30)
                    field = "z_mean" if method == "encode" else "images"
                    to_array(getattr(reply, field), field)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return _summary(latencies, batch, elapsed, errors)


def _summary(latencies: list[float], batch: int, elapsed: float, errors: int) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "images_per_s": len(latencies) * batch / elapsed,
        **percentiles(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--method", choices=["encode", "decode", "sample"], default="decode")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--format", default="float32", choices=["float32", "uint8", "png"])
    args = parser.parse_args()
    if args.concurrency == 1:
        result = run_client(args.target, args.method, args.batch, args.seconds, args.format)
    else:
        result = asyncio.run(
            run_aio(args.target, args.method, args.batch, args.concurrency, args.seconds)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
