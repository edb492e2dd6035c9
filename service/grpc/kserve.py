"""The Open Inference Protocol (KServe V2, `inference.GRPCInferenceService`) beside VaeService.

Each served version's encoder and decoder are V2 models (`kserve_converters.py` names them).
ModelInfer runs through the same `VaeCore.encode` / `decode` as Encode and Decode, so the same
batchers, checks and limits, and the numbers are theirs bit for bit; the interceptor wraps this
service like VaeService (token, admission, metrics, error -> status). No validation here.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from vaeserve import __version__
from vaeserve.inference import grpc_predict_v2_pb2 as pb
from vaeserve.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from vaeserve.service.core import VaeCore
from vaeserve.service.echo import shown
from vaeserve.service.errors import ModelNotFoundError
from vaeserve.service.grpc import kserve_converters as kc
from vaeserve.service.grpc.servicers import deadline
from vaeserve.service.registry import LoadedModel

Context = grpc.aio.ServicerContext
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVER_NAME = "vaeserve"
# Answered while loading and draining too (the interceptor admits them like health checks).
PROBES = frozenset(f"/{SERVICE.full_name}/{m}" for m in ("ServerLive", "ServerReady"))


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The V2 service over the core; `core` is set once the models are loaded (the interceptor
    admits no request before that)."""

    def __init__(
        self, core: VaeCore | None = None, ready: Callable[[], bool] | None = None
    ) -> None:
        self.core: VaeCore = core  # type: ignore[assignment]
        # The server's readiness (loaded, not draining), as its health service reports it.
        self.ready = ready or (lambda: self.core is not None)

    def _resolve(self, name: str, version: str) -> tuple[LoadedModel, kc.V2Name]:
        v2 = kc.parse_name(name)
        if v2 is None:
            raise ModelNotFoundError(
                f"unknown model {shown(name)}; V2 models are NAME-encoder and NAME-decoder "
                f"(or encoder / decoder for the default model), NAME among "
                f"{sorted({n for n, _ in self.core.registry.versions()})}"
            )
        return self.core.resolve(v2.model, kc.parse_version(version)), v2

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        """Ready when the name and version resolve to a served version; an unknown one is
        `ready: false`, as Triton answers, not an error."""
        try:
            self._resolve(request.name, request.version)
        except (ModelNotFoundError, ValueError):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=[])

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        model, v2 = self._resolve(request.name, request.version)
        versions = [v for n, v in self.core.registry.versions() if n == model.spec.name]
        return kc.metadata_response(model, v2, versions)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        """Triton's extension, for perf_analyzer: the rows a request may carry are the server's
        max_images_per_request (the batchers split them into max_batch_size runs)."""
        model, v2 = self._resolve(request.name, request.version)
        return kc.config_response(model, v2, self.core.settings.max_images_per_request)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        model, v2 = self._resolve(request.model_name, request.model_version)
        outputs = kc.outputs_for(request, model, v2.graph)
        if v2.graph == "encoder":
            call = kc.encode_request(request, model)
            encoded = await self.core.encode(model, call, deadline(context))
            arrays = kc.encoder_arrays(model, encoded)
        else:
            images = await self.core.decode(
                model, kc.decode_request(request, model), deadline(context)
            )
            arrays = kc.decoder_arrays(model, images)
        return kc.infer_response(request, model, v2, outputs, arrays)


def add_to_server(servicer: KServeServicer, server: grpc.aio.Server) -> None:
    """Register the V2 service (the hook server.py calls beside VaeService's)."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
