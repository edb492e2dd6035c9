"""VaeService methods: unpack the request, call the core, pack the response. No validation or
error handling here: the core validates, the interceptor maps errors to status codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np

from vaeserve.service import latent_ops
from vaeserve.service.core import VaeCore
from vaeserve.service.formats import OutputFormat, Rendered, is_encoded, render
from vaeserve.service.grpc import converters as cv
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

Context = grpc.aio.ServicerContext


def deadline(context: Context) -> float | None:
    """The RPC's deadline on the event loop's clock (None: the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining


async def rendered(images: np.ndarray, fmt: OutputFormat) -> Rendered:
    """Encoding files is CPU work: off the event loop. Arrays are converted in place."""
    if is_encoded(fmt):
        return await asyncio.to_thread(render, images, fmt)
    return render(images, fmt)


class VaeServicer(vae_pb2_grpc.VaeServiceServicer):
    """The service; `core` is set once the models are loaded (the interceptor admits no request
    before that)."""

    def __init__(self, core: VaeCore | None = None) -> None:
        self.core: VaeCore = core  # type: ignore[assignment]

    async def Encode(self, request: pb.EncodeRequest, context: Context) -> pb.EncodeResponse:
        model = self.core.resolve(request.model, request.version)
        encoded = await self.core.encode(model, cv.encode_request(request), deadline(context))
        return cv.encode_response(model, encoded)

    async def Decode(self, request: pb.DecodeRequest, context: Context) -> pb.DecodeResponse:
        model = self.core.resolve(request.model, request.version)
        call = cv.decode_request(request)
        images = await self.core.decode(model, call, deadline(context))
        return cv.decode_response(model, await rendered(images, call.fmt))

    async def Sample(self, request: pb.SampleRequest, context: Context) -> pb.SampleResponse:
        model = self.core.resolve(request.model, request.version)
        call = cv.sample_request(request)
        sampled = await self.core.sample(model, call, deadline(context))
        return cv.sample_response(model, sampled, await rendered(sampled.images, call.fmt))

    async def SampleStream(
        self, request: pb.SampleRequest, context: Context
    ) -> AsyncIterator[pb.SampleResponse]:
        model = self.core.resolve(request.model, request.version)
        call = cv.sample_request(request)
        async for sampled in self.core.sample_stream(model, call, deadline(context)):
            out = [cv.sample_response(model, sampled, await rendered(sampled.images, call.fmt))]
            del sampled  # while the send waits, only the message is held, not the arrays too
            yield out.pop()

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: Context
    ) -> pb.GetModelInfoResponse:
        model = self.core.resolve(request.model, request.version)
        return cv.model_info(self.core.describe(model))

    async def Interpolate(
        self, request: pb.InterpolateRequest, context: Context
    ) -> pb.InterpolateResponse:
        model = self.core.resolve(request.model, request.version)
        call = cv.interpolate_request(request)
        path = await latent_ops.interpolate(self.core, model, call, deadline(context))
        images = await rendered(path.images, call.fmt)
        return cv.decoded_response(pb.InterpolateResponse(), model, path, images)

    async def ListConcepts(
        self, request: pb.ListConceptsRequest, context: Context
    ) -> pb.ListConceptsResponse:
        return cv.concepts_response(self.core.resolve(request.model, request.version))

    async def Edit(self, request: pb.EditRequest, context: Context) -> pb.EditResponse:
        model = self.core.resolve(request.model, request.version)
        call = cv.edit_request(request)
        edited = await latent_ops.edit(self.core, model, call, deadline(context))
        images = await rendered(edited.images, call.fmt)
        return cv.decoded_response(pb.EditResponse(), model, edited, images)
