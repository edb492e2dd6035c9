"""The service core: encode, decode and sample on numpy arrays. It knows no gRPC.

It takes the typed requests of `requests.py`, checks them (`checks.py`, raising the domain
errors of `errors.py`), draws seeded noise (`rng.py`), and runs the graphs through the batchers
of the served versions, which the registry holds (`registry.py`). `describe` is what
GetModelInfo shows, as plain data.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from vaeserve import __version__
from vaeserve.service import checks, latent, rng
from vaeserve.service.batching import Flow, submit_all
from vaeserve.service.concepts import LabelStats, required
from vaeserve.service.config import Settings
from vaeserve.service.errors import LimitExceeded
from vaeserve.service.formats import MESSAGE_OVERHEAD, OutputFormat
from vaeserve.service.metrics import Metrics
from vaeserve.service.registry import Key, LoadedModel, ModelRegistry
from vaeserve.service.repository import ModelSpec
from vaeserve.service.requests import DecodeRequest, Encoded, EncodeRequest, Sampled, SampleRequest
from vaeserve.service.runtime import ORT_VERSION


@dataclass(frozen=True)
class ServedLimits:
    """The limits a caller must stay within, as GetModelInfo reports them."""

    max_batch_size: int
    max_delay_ms: float
    max_queue: int
    max_message_bytes: int
    max_images_per_request: int
    max_sample_n: int
    max_stream_n: int


@dataclass(frozen=True)
class ModelDescription:
    """What GetModelInfo says of a served version; field names are the response's."""

    name: str
    version: int
    latent_dim: int
    image_shape: list[int]
    encoder_sha256: str  # of the bytes really loaded (verified; fp16: the variants')
    decoder_sha256: str
    providers: list[str]
    requested_providers: list[str]
    gpu_fallback: bool
    threads: int
    limits: ServedLimits
    models: list[Key]
    server_version: str
    onnxruntime_version: str
    metadata_json: str
    precision: str
    io_binding: bool
    batch_buckets: list[int]
    tensorrt_requested: bool


class VaeCore:
    """The operations on the served model versions (the registry's), with their checks."""

    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics | None = None) -> VaeCore:
        """Scan the repository and load, check and warm up every model version (blocking)."""
        from vaeserve.service.loader import open_registry

        return cls(open_registry(settings, metrics), settings)

    @property
    def models(self) -> dict[Key, LoadedModel]:
        return self.registry.table

    @property
    def max_batch_size(self) -> int:
        return self.registry.max_batch_size

    def start(self) -> None:
        """Start the batchers (needs the running event loop)."""
        self.registry.start()

    async def stop(self) -> None:
        await self.registry.stop()

    def resolve(self, name: str = "", version: int = 0) -> LoadedModel:
        """The model for a request; empty name = default model, version 0 = its highest."""
        return self.registry.resolve(name, version)

    # --- the operations -------------------------------------------------------------------

    async def encode(
        self, model: LoadedModel, r: EncodeRequest, deadline: float | None = None
    ) -> Encoded:
        spec = model.spec
        x = checks.check_images(spec, r.images, self.settings)
        checks.check_response(len(x) * spec.latent_dim * 4 * 3, self.settings)
        z_mean, z_log_var = await submit_all(model.encoder, x, deadline)
        if not r.sample:
            return Encoded(z_mean, z_log_var, None, 0)
        seed = rng.random_seed() if r.seed is None else r.seed
        eps = rng.normal_rows(seed, 0, len(x), spec.latent_dim)
        z = (z_mean + np.exp(np.float32(0.5) * z_log_var) * eps).astype(np.float32, copy=False)
        return Encoded(z_mean, z_log_var, z, seed)

    async def decode(
        self, model: LoadedModel, r: DecodeRequest, deadline: float | None = None
    ) -> np.ndarray:
        z = checks.check_latents(model.spec, r.latents, self.settings)
        row = checks.row_bytes(model.spec, r.fmt, latents=False)
        checks.check_response(len(z) * row, self.settings, n=len(z), fmt=r.fmt)
        (images,) = await submit_all(model.decoder, z, deadline)
        return images

    async def sample(
        self, model: LoadedModel, r: SampleRequest, deadline: float | None = None
    ) -> Sampled:
        checks.check_sample(r.n, r.temperature, r.offset, self.settings.max_sample_n, "Sample")
        around = _sampling_label(model, r.concept)
        row = checks.row_bytes(model.spec, r.fmt)
        checks.check_response(r.n * row, self.settings, n=r.n, fmt=r.fmt, more=", or SampleStream")
        seed = rng.random_seed() if r.seed is None else r.seed
        return await self._sample_rows(model, seed, r.temperature, r.offset, r.n, deadline, around)

    async def sample_stream(
        self, model: LoadedModel, r: SampleRequest, deadline: float | None = None
    ) -> AsyncIterator[Sampled]:
        """Sample in chunks, each under the message-size limit. At most `stream_prefetch` chunks
        are computed ahead of the one the transport is sending (0: the next one starts once the
        transport took the last), so a client that stops reading stops the computing; if the
        transport has not taken a chunk after `stream_stall_s`, those computed ahead are
        dropped, so a stalled stream holds only the chunk being sent. The chunks share one
        batcher flow: a long stream gets its fair share and no more."""
        s = self.settings
        checks.check_sample(r.n, r.temperature, r.offset, s.max_stream_n, "SampleStream")
        around = _sampling_label(model, r.concept)
        chunk = self.chunk_rows(model.spec, r.fmt, r.chunk_size)
        seed = rng.random_seed() if r.seed is None else r.seed
        flow = Flow()  # one caller for the batcher's fairness, however many chunks it asks for
        end, ahead = r.offset + r.n, s.stream_prefetch
        pending: deque[tuple[int, asyncio.Task[Sampled]]] = deque()  # (first row, its chunk)
        next_start = r.offset  # O(1) state: no list of chunk positions, whatever n and chunk are

        def launch(limit: int) -> None:
            nonlocal next_start
            while len(pending) < limit and next_start < end:
                rows = min(chunk, end - next_start)
                task = asyncio.ensure_future(
                    self._sample_rows(
                        model, seed, r.temperature, next_start, rows, deadline, around, flow
                    )
                )
                pending.append((next_start, task))
                next_start += rows

        def forget() -> None:
            """The client stopped reading: drop the chunks computed ahead (rows are a function
            of seed and position, so they are recomputed bit for bit when it reads again)."""
            nonlocal next_start
            if pending:
                next_start = pending[0][0]
            while pending:
                pending.popleft()[1].cancel()

        loop = asyncio.get_running_loop()
        stalled: asyncio.TimerHandle | None = None
        try:
            launch(1)
            while pending:
                ready = [await pending.popleft()[1]]
                launch(ahead)  # computed while this chunk is handed to the transport
                stalled = loop.call_later(s.stream_stall_s, forget)
                yield ready.pop()  # popped: this frame keeps no reference while the send waits
                stalled.cancel()
                launch(1)
        finally:
            if stalled is not None:
                stalled.cancel()
            for _, task in pending:
                task.cancel()

    def chunk_rows(self, spec: ModelSpec, fmt: OutputFormat, requested: int = 0) -> int:
        """Images per streamed message: requested (or max_batch_size), capped by max_batch_size,
        by max_stream_chunk_bytes (what a stalled stream may hold) and by the message limit."""
        s, per_image = self.settings, checks.row_bytes(spec, fmt)
        fits = (s.max_message_bytes - MESSAGE_OVERHEAD) // per_image
        if fits < 1:
            raise LimitExceeded(
                f"one {fmt} image needs {per_image} bytes, over max_message_bytes "
                f"{s.max_message_bytes}",
                limit="max_message_bytes",
                field="format",
            )
        budget = s.max_stream_chunk_bytes // per_image
        wanted = requested or self.max_batch_size
        return max(1, min(wanted, self.max_batch_size, fits, budget))

    async def _sample_rows(
        self,
        model: LoadedModel,
        seed: int,
        temperature: float,
        offset: int,
        n: int,
        deadline: float | None,
        around: LabelStats | None = None,
        flow: Flow | None = None,
    ) -> Sampled:
        latents = rng.normal_rows(seed, offset, n, model.spec.latent_dim)
        if around is not None:  # N(mean_K, temperature^2 cov_K), row by row
            latents = latent.around(around.mean, around.factor, latents, temperature)
        elif temperature != 1.0:
            latents *= np.float32(temperature)
        (images,) = await submit_all(model.decoder, latents, deadline, flow)
        return Sampled(images, latents, seed, offset)

    def describe(self, model: LoadedModel) -> ModelDescription:
        """GetModelInfo's answer: the version, where and how its sessions run, the limits."""
        spec, runtime, s = model.spec, model.runtime, self.settings
        return ModelDescription(
            name=spec.name,
            version=spec.version,
            latent_dim=spec.latent_dim,
            image_shape=list(spec.image_shape),
            encoder_sha256=runtime.encoder.sha256,
            decoder_sha256=runtime.decoder.sha256,
            providers=list(runtime.providers),
            requested_providers=[
                p.removesuffix("ExecutionProvider").lower() for p in runtime.requested
            ],
            gpu_fallback=runtime.gpu_fallback,
            threads=runtime.threads,
            limits=ServedLimits(
                max_batch_size=self.max_batch_size,
                max_delay_ms=s.max_delay_ms,
                max_queue=s.max_queue,
                max_message_bytes=s.max_message_bytes,
                max_images_per_request=s.max_images_per_request,
                max_sample_n=s.max_sample_n,
                max_stream_n=s.max_stream_n,
            ),
            models=self.registry.versions(),
            server_version=__version__,
            onnxruntime_version=ORT_VERSION,
            # model.json of the version (dataset, training config, metrics, parity, provenance)
            metadata_json=json.dumps(spec.meta, sort_keys=True, default=str),
            precision=runtime.precision,
            io_binding=runtime.decoder.io_binding,
            batch_buckets=list(runtime.decoder.buckets or []),
            tensorrt_requested=runtime.tensorrt,
        )


def _sampling_label(model: LoadedModel, concept: str) -> LabelStats | None:
    """The label a Sample draws around (`label:K`), or None for the prior."""
    return required(model.concepts, model.spec).label(concept) if concept else None
