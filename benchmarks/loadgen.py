"""Load generator, run in its own process so it never shares the server's event loop.

`python -m benchmarks.loadgen --target HOST:PORT --method decode --batch 1 --concurrency 64
--seconds 3` prints one JSON line: requests, images/s, latency percentiles, errors. With
concurrency 1 it drives the typed `VaeClient` (numpy in and out, as an application would); with
more (or with --aio), that many asyncio callers share one grpc.aio channel.

`--protocol kserve --model NAME` sends the same Decode load as KServe V2 ModelInfer requests
(raw float32 bytes in and out) to Triton or MLServer: the same callers, channel and timing code,
so figures compare across servers (benchmarks/peers).
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
    target: str,
    method: str,
    batch: int,
    concurrency: int,
    seconds: float,
    protocol: str = "vaeserve",
    model: str = "",
    announce: bool = False,
) -> dict[str, Any]:
    """`concurrency` callers on one channel, each sending its next request when one returns."""
    options = [
        ("grpc.max_receive_message_length", MESSAGE_BYTES),
        ("grpc.max_send_message_length", MESSAGE_BYTES),
    ]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        if protocol == "kserve":
            rpc, request, check = await _kserve_call(channel, method, batch, model)
        else:
            rpc, request, check = await _vaeserve_call(channel, method, batch)
        check(await rpc(request))  # warm-up, and a broken server fails here
        latencies: list[float] = []
        errors = 0
        end = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    check(await rpc(request, timeout=30))
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        if announce:  # the harness samples server CPU time on these lines
            print("start", flush=True)
        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        if announce:
            print("end", flush=True)
    return _summary(latencies, batch, elapsed, errors)


Call = tuple[Callable[..., Any], Any, Callable[[Any], object]]


async def _vaeserve_call(channel: grpc.aio.Channel, method: str, batch: int) -> Call:
    """(rpc, request, reply check) for vaeserve.v1.VaeService: the reply's tensor is decoded."""
    stub = vae_pb2_grpc.VaeServiceStub(channel)
    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    x = _inputs(method, batch, info.latent_dim, tuple(info.image_shape))
    if method == "encode":
        rpc, request = stub.Encode, pb.EncodeRequest(images=to_tensor(x))
    elif method == "decode":
        rpc, request = stub.Decode, pb.DecodeRequest(latents=to_tensor(x))
    else:
        rpc, request = stub.Sample, pb.SampleRequest(n=batch, seed=1)
    field = "z_mean" if method == "encode" else "images"

    def check(reply: Any) -> object:
        out = to_array(getattr(reply, field), field)
        if out.shape[0] != batch:
            raise ValueError(f"{field}: {out.shape[0]} rows for {batch}")
        return out

    return rpc, request, check


async def _kserve_call(channel: grpc.aio.Channel, method: str, batch: int, model: str) -> Call:
    """(rpc, request, reply check) for KServe V2 ModelInfer on `model` (Decode only)."""
    from benchmarks.peers import kserve

    if method != "decode":
        raise SystemExit("--protocol kserve serves decode only")
    _, pb_grpc = kserve.stubs()
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    input_name, output_name, latent_dim, image_shape = await kserve.metadata_aio(stub, model)
    x = _inputs(method, batch, latent_dim, image_shape)
    request = kserve.infer_request(model, input_name, output_name, x)
    return stub.ModelInfer, request, lambda reply: kserve.output_array(reply, batch, image_shape)


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
    parser.add_argument("--protocol", choices=["vaeserve", "kserve"], default="vaeserve")
    parser.add_argument("--model", default="", help="model name (kserve)")
    parser.add_argument(
        "--aio", action="store_true", help="the grpc.aio callers even at concurrency 1"
    )
    parser.add_argument(
        "--announce", action="store_true", help="print start/end around the timed part (aio)"
    )
    args = parser.parse_args()
    if args.concurrency == 1 and args.protocol == "vaeserve" and not args.aio:
        result = run_client(args.target, args.method, args.batch, args.seconds, args.format)
    else:
        result = asyncio.run(
            run_aio(
                args.target,
                args.method,
                args.batch,
                args.concurrency,
                args.seconds,
                args.protocol,
                args.model,
                args.announce,
            )
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
