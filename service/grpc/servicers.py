"""VaeService methods: unpack the request, call the core, pack the response. No validation or
error handling here: the core validates, the interceptor maps errors to status codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np

from vaeserve.service import latent_ops
from vaeserve.service.core import VaeCore
from vaeserve.service.formats import OutputFormat, Rendered, render
from vaeserve.service.grpc import converters as cv
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

Context = grpc.aio.ServicerContext


def deadline(context: Context) -> float | None:
    """The RPC's deadline on the event loop's clock (None: the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining


async def rendered(images: np.ndarray, fmt: OutputFormat) -> Rendered:
    """PNG encoding is CPU work: off the event loop. Arrays are converted in place."""
    if fmt == "png":
        return await asyncio.to_thread(render, images, fmt)
    return render(images, fmt)


class VaeServicer(vae_pb2_grpc.VaeServiceServicer):
    """The service; `core` is set once the models are loaded (the interceptor admits no request
    before that)."""

    def __init__(self, core: VaeCore | None = None) -> None:
        self.core: VaeCore = core  # type: ignore[assignment]

    async def Encode(self, request: pb.EncodeRequest, context: Context) -> pb.EncodeResponse:
        model = self.core.resolve(request.model, request.version)
        images = cv.to_array(request.images, "images", request.HasField("images"))
        encoded = await self.core.encode(
            model,
            images,
            sample=request.sample,
            seed=cv.seed_of(request),
            deadline=deadline(context),
        )
        return cv.encode_response(model, encoded)

    async def Decode(self, request: pb.DecodeRequest, context: Context) -> pb.DecodeResponse:
        model, fmt = (
            self.core.resolve(request.model, request.version),
            cv.output_format(request.format),
        )
        latents = cv.to_array(request.latents, "latents", request.HasField("latents"))
        images = await self.core.decode(model, latents, fmt, deadline(context))
        return cv.decode_response(model, await rendered(images, fmt))

    async def Sample(self, request: pb.SampleRequest, context: Context) -> pb.SampleResponse:
        model, args = self.core.resolve(request.model, request.version), cv.sample_args(request)
        sampled = await self.core.sample(model, request.n, deadline=deadline(context), **args)
        return cv.sample_response(model, sampled, await rendered(sampled.images, args["fmt"]))

    async def SampleStream(
        self, request: pb.SampleRequest, context: Context
    ) -> AsyncIterator[pb.SampleResponse]:
        model, args = self.core.resolve(request.model, request.version), cv.sample_args(request)
        chunks = self.core.sample_stream(
            model, request.n, chunk_size=request.chunk_size, deadline=deadline(context), **args
        )
        async for sampled in chunks:
            out = [cv.sample_response(model, sampled, await rendered(sampled.images, args["fmt"]))]
            del sampled  # while the send waits, only the message is held, not the arrays too
            yield out.pop()

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: Context
    ) -> pb.GetModelInfoResponse:
        return cv.model_info(self.core, self.core.resolve(request.model, request.version))

    async def Interpolate(
        self, request: pb.InterpolateRequest, context: Context
    ) -> pb.InterpolateResponse:
        model, args = (
            self.core.resolve(request.model, request.version),
            cv.interpolate_args(request),
        )
        path = await latent_ops.interpolate(self.core, model, deadline=deadline(context), **args)
        png = await rendered(path.images, args["fmt"])
        return cv.decoded_response(pb.InterpolateResponse(), model, path, png)

    async def ListConcepts(
        self, request: pb.ListConceptsRequest, context: Context
    ) -> pb.ListConceptsResponse:
        return cv.concepts_response(self.core.resolve(request.model, request.version))

    async def Edit(self, request: pb.EditRequest, context: Context) -> pb.EditResponse:
        model, args = self.core.resolve(request.model, request.version), cv.edit_args(request)
        edited = await latent_ops.edit(self.core, model, deadline=deadline(context), **args)
        png = await rendered(edited.images, args["fmt"])
        return cv.decoded_response(pb.EditResponse(), model, edited, png)
