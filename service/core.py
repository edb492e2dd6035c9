"""The service core: encode, decode and sample on numpy arrays. It knows no gRPC.

It validates what comes in (raising the domain errors of `errors.py`), draws seeded noise
(`rng.py`), and runs the graphs through one dynamic batcher per graph (`batching.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from vaeserve.service import latent, rng
from vaeserve.service.batching import Batcher, Flow, submit_all
from vaeserve.service.concepts import Concepts, ConceptsRead, LabelStats, read_concepts, required
from vaeserve.service.config import Settings
from vaeserve.service.echo import shown_list
from vaeserve.service.errors import InvalidInput, LimitExceeded, StartupError
from vaeserve.service.formats import MESSAGE_OVERHEAD, OutputFormat, image_bytes
from vaeserve.service.metrics import Metrics
from vaeserve.service.repository import (
    ModelNotFoundError,
    ModelRepository,
    ModelSpec,
    RepositoryError,
)
from vaeserve.service.runtime import CUDA, ModelRuntime, load_runtime

log = logging.getLogger(__name__)

MAX_TEMPERATURE = 100.0
MAX_INDEX = 2**63  # offset + n stays below this


@dataclass(frozen=True)
class Limits:
    """The request limits of the settings, as the core and GetModelInfo see them."""

    max_batch_size: int
    max_delay_ms: float
    batch_wait_when_idle: bool
    max_queue: int
    max_message_bytes: int
    max_images_per_request: int
    max_sample_n: int
    max_stream_n: int
    stream_prefetch: int
    stream_stall_s: float
    max_stream_chunk_bytes: int

    @classmethod
    def from_settings(cls, s: Settings, on_gpu: bool = False) -> Limits:
        return cls(
            s.resolved_max_batch_size(on_gpu),
            s.max_delay_ms,
            s.batch_wait_when_idle,
            s.max_queue,
            s.max_message_bytes,
            s.max_images_per_request,
            s.max_sample_n,
            s.max_stream_n,
            s.stream_prefetch,
            s.stream_stall_s,
            s.max_stream_chunk_bytes,
        )


@dataclass
class Encoded:
    z_mean: np.ndarray
    z_log_var: np.ndarray
    z: np.ndarray | None
    seed: int


@dataclass
class Sampled:
    """Images (float32 NCHW in [0, 1]) decoded from `latents`, rows offset.. of `seed`."""

    images: np.ndarray
    latents: np.ndarray
    seed: int
    offset: int


@dataclass
class LoadedModel:
    """A model version ready to serve: its sessions and a batcher in front of each graph."""

    runtime: ModelRuntime
    encoder: Batcher
    decoder: Batcher
    concepts: Concepts | None = None  # from concepts.json beside the graphs, when usable
    concepts_sha256: str | None = None  # of the concepts.json read (None: there was none)

    @property
    def spec(self) -> ModelSpec:
        return self.runtime.spec


class VaeCore:
    """Every servable model version of a repository, behind dynamic batchers."""

    def __init__(
        self,
        repository: ModelRepository,
        runtimes: list[ModelRuntime],
        limits: Limits,
        metrics: Metrics | None = None,
    ) -> None:
        self.repository = repository
        self.limits = limits
        self.metrics = metrics
        # Sized once: a reload that adds versions shares these threads (at least 4 of them).
        self.executor = ThreadPoolExecutor(
            max_workers=max(4, 2 * len(runtimes)), thread_name_prefix="vaeserve-ort"
        )
        self.models: dict[tuple[str, int], LoadedModel] = {}
        self._retired: weakref.WeakSet[Batcher] = weakref.WeakSet()
        for runtime in runtimes:  # VaeCore.load runs in a worker thread: the file reads are too
            key = (runtime.spec.name, runtime.spec.version)
            self.models[key] = self.new_model(runtime, read_concepts(runtime.spec))

    def new_model(self, runtime: ModelRuntime, concepts: ConceptsRead) -> LoadedModel:
        """A loaded runtime and its concepts (`read_concepts`, read off the event loop) behind
        its two batchers (not started yet), reported in metrics."""
        spec = runtime.spec
        if self.metrics:
            self.metrics.model.labels(spec.name, str(spec.version)).info(
                {"providers": ",".join(runtime.providers), "threads": str(runtime.threads)}
            )
        return LoadedModel(
            runtime,
            self._batcher(runtime, "encoder"),
            self._batcher(runtime, "decoder"),
            *concepts,
        )

    def install(
        self, repository: ModelRepository, models: dict[tuple[str, int], LoadedModel]
    ) -> None:
        """Serve `models` from now on; the batchers of those no longer served are retired.

        One synchronous step on the event loop: each request resolves against the old table or
        the new one, never a mix. A request already holding a retired model finishes on it (a
        retired batcher restarts for late pieces), and its sessions are freed with its last user.
        """
        old, self.repository, self.models = self.models, repository, models
        gone = [m for key, m in old.items() if models.get(key) is not m]
        for model in gone:
            for batcher in (model.encoder, model.decoder):
                batcher.retire()
                self._retired.add(batcher)
            if self.metrics and (model.spec.name, model.spec.version) not in models:
                self.metrics.model.remove(model.spec.name, str(model.spec.version))

    def _batcher(self, runtime: ModelRuntime, graph: str) -> Batcher:
        session = runtime.encoder if graph == "encoder" else runtime.decoder
        return Batcher(
            session.run,
            self.executor,
            max_batch_size=self.limits.max_batch_size,
            max_delay_s=self.limits.max_delay_ms / 1000.0,
            wait_when_idle=self.limits.batch_wait_when_idle,
            max_queue=self.limits.max_queue,
            labels=(runtime.spec.name, str(runtime.spec.version), graph),
            metrics=self.metrics,
        )

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics | None = None) -> VaeCore:
        """Scan the repository and load, check and warm up every model version (blocking)."""
        root = settings.repository_root()
        try:
            repository = ModelRepository(root).scan()
        except RepositoryError as exc:  # nothing servable: a start-up failure (exit 1), not usage
            raise StartupError(str(exc)) from None
        specs = [spec for versions in repository.models.values() for spec in versions.values()]
        runtimes, errors = load_runtimes(specs, settings)
        if not runtimes:
            raise StartupError(
                f"{root}: no model version could be loaded: {'; '.join(errors.values())}"
            )
        repository.errors.update(errors)
        repository.models = served_specs(repository.models, runtimes)
        limits = Limits.from_settings(settings, any(r.on_gpu for r in runtimes))
        return cls(repository, runtimes, limits, metrics)

    def start(self) -> None:
        """Start the batchers (needs the running event loop)."""
        for model in self.models.values():
            model.encoder.start()
            model.decoder.start()

    async def stop(self) -> None:
        for model in self.models.values():
            await model.encoder.stop()
            await model.decoder.stop()
        for batcher in list(self._retired):  # retired ones a late request restarted
            await batcher.stop()
        self.executor.shutdown(wait=True)

    def resolve(self, name: str = "", version: int = 0) -> LoadedModel:
        """The model for a request; empty name = default model, version 0 = its highest."""
        spec = self.repository.resolve(name or None, version or None)
        try:
            return self.models[(spec.name, spec.version)]
        except KeyError:  # pragma: no cover - the repository only holds loaded versions
            raise ModelNotFoundError(f"model {spec.name!r} v{spec.version} is not loaded") from None

    # --- the three operations -------------------------------------------------------------

    async def encode(
        self,
        model: LoadedModel,
        images: np.ndarray,
        *,
        sample: bool = False,
        seed: int | None = None,
        deadline: float | None = None,
    ) -> Encoded:
        x = self._check_images(model.spec, images)
        self._check_response(len(x) * model.spec.latent_dim * 4 * 3)
        z_mean, z_log_var = await submit_all(model.encoder, x, deadline)
        if not sample:
            return Encoded(z_mean, z_log_var, None, 0)
        seed = rng.random_seed() if seed is None else seed
        eps = rng.normal_rows(seed, 0, len(x), model.spec.latent_dim)
        z = (z_mean + np.exp(np.float32(0.5) * z_log_var) * eps).astype(np.float32, copy=False)
        return Encoded(z_mean, z_log_var, z, seed)

    async def decode(
        self,
        model: LoadedModel,
        latents: np.ndarray,
        fmt: OutputFormat = "float32",
        deadline: float | None = None,
    ) -> np.ndarray:
        z = self._check_latents(model.spec, latents)
        self._check_response(len(z) * image_bytes(model.spec.image_shape, fmt), n=len(z), fmt=fmt)
        (images,) = await submit_all(model.decoder, z, deadline)
        return images

    async def sample(
        self,
        model: LoadedModel,
        n: int,
        *,
        seed: int | None = None,
        temperature: float = 1.0,
        offset: int = 0,
        fmt: OutputFormat = "float32",
        deadline: float | None = None,
        concept: str = "",
    ) -> Sampled:
        self._check_sample(n, temperature, offset, self.limits.max_sample_n, "Sample")
        around = _sampling_label(model, concept)
        per_image = image_bytes(model.spec.image_shape, fmt) + 4 * model.spec.latent_dim
        self._check_response(n * per_image, n=n, fmt=fmt)
        seed = rng.random_seed() if seed is None else seed
        return await self._sample_rows(model, seed, temperature, offset, n, deadline, around)

    async def sample_stream(
        self,
        model: LoadedModel,
        n: int,
        *,
        seed: int | None = None,
        temperature: float = 1.0,
        offset: int = 0,
        fmt: OutputFormat = "float32",
        chunk_size: int = 0,
        deadline: float | None = None,
        concept: str = "",
    ) -> AsyncIterator[Sampled]:
        """Sample in chunks, each under the message-size limit. At most `stream_prefetch` chunks
        are computed ahead of the one the transport is sending (0: the next one starts once the
        transport took the last), so a client that stops reading stops the computing; if the
        transport has not taken a chunk after `stream_stall_s`, those computed ahead are
        dropped, so a stalled stream holds only the chunk being sent. The chunks share one
        batcher flow: a long stream gets its fair share and no more."""
        self._check_sample(n, temperature, offset, self.limits.max_stream_n, "SampleStream")
        around = _sampling_label(model, concept)
        chunk = self.chunk_rows(model.spec, fmt, chunk_size)
        seed = rng.random_seed() if seed is None else seed
        flow = Flow()  # one caller for the batcher's fairness, however many chunks it asks for
        end, ahead = offset + n, self.limits.stream_prefetch
        pending: deque[tuple[int, asyncio.Task[Sampled]]] = deque()  # (first row, its chunk)
        next_start = offset  # O(1) state: no list of chunk positions, whatever n and chunk are

        def launch(limit: int) -> None:
            nonlocal next_start
            while len(pending) < limit and next_start < end:
                rows = min(chunk, end - next_start)
                task = asyncio.ensure_future(
                    self._sample_rows(
                        model, seed, temperature, next_start, rows, deadline, around, flow
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
                stalled = loop.call_later(self.limits.stream_stall_s, forget)
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
        per_image = image_bytes(spec.image_shape, fmt) + 4 * spec.latent_dim
        fits = (self.limits.max_message_bytes - MESSAGE_OVERHEAD) // per_image
        if fits < 1:
            raise LimitExceeded(
                f"one {fmt} image needs {per_image} bytes, over max_message_bytes "
                f"{self.limits.max_message_bytes}"
            )
        budget = self.limits.max_stream_chunk_bytes // per_image
        wanted = requested or self.limits.max_batch_size
        return max(1, min(wanted, self.limits.max_batch_size, fits, budget))

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

    # --- validation ---------------------------------------------------------------------

    def _check_count(self, n: int, what: str) -> None:
        if n < 1:
            raise InvalidInput(f"{what}: got {n}, need at least 1")
        if n > self.limits.max_images_per_request:
            raise LimitExceeded(
                f"{what}: {n} is over this server's max_images_per_request "
                f"{self.limits.max_images_per_request}; split the request"
            )

    def _check_images(self, spec: ModelSpec, images: np.ndarray) -> np.ndarray:
        want = (spec.image_shape[0], spec.image_shape[1], spec.image_shape[2])
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise InvalidInput(
                f"images: shape {shown_list(images.shape)}, but {spec.name} v{spec.version} takes "
                f"[N, {want[0]}, {want[1]}, {want[2]}] (N, channels, height, width)"
            )
        self._check_count(len(images), "images: number of images")
        if images.dtype == np.uint8:
            return images.astype(np.float32) / np.float32(255.0)
        if images.dtype != np.float32:
            raise InvalidInput(f"images: dtype {images.dtype}, need float32 or uint8")
        _check_finite(images, "images")
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise InvalidInput(
                f"images: float32 pixel values must be in [0, 1], got [{low:g}, {high:g}] "
                "(send uint8 for 0..255)"
            )
        return images

    def _check_latents(self, spec: ModelSpec, latents: np.ndarray) -> np.ndarray:
        if latents.ndim != 2 or latents.shape[1] != spec.latent_dim:
            raise InvalidInput(
                f"latents: shape {shown_list(latents.shape)}, but {spec.name} v{spec.version} has "
                f"latent_dim {spec.latent_dim}: need [N, {spec.latent_dim}]"
            )
        if latents.dtype != np.float32:
            raise InvalidInput(f"latents: dtype {latents.dtype}, need float32")
        self._check_count(len(latents), "latents: number of rows")
        _check_finite(latents, "latents")
        return latents

    def _check_sample(self, n: int, temperature: float, offset: int, limit: int, rpc: str) -> None:
        if n < 1:
            raise InvalidInput(f"n: got {n}, need at least 1")
        if n > limit:
            more = "; use SampleStream for more" if rpc == "Sample" else ""
            raise LimitExceeded(f"n: {n} is over this server's limit of {limit} for {rpc}{more}")
        if not np.isfinite(temperature) or not 0.0 <= temperature <= MAX_TEMPERATURE:
            raise InvalidInput(
                f"temperature: got {temperature}, need a finite value in [0, {MAX_TEMPERATURE:g}]"
            )
        if offset + n >= MAX_INDEX:
            raise InvalidInput(f"offset + n must stay below 2**63, got {offset} + {n}")

    def _check_response(self, payload: int, *, n: int = 0, fmt: str = "") -> None:
        size = payload + MESSAGE_OVERHEAD
        if size > self.limits.max_message_bytes:
            hint = (
                f" ({n} images as {fmt}); ask for fewer, uint8 or png, or SampleStream" if n else ""
            )
            raise LimitExceeded(
                f"the response would be about {size} bytes{hint}, over max_message_bytes "
                f"{self.limits.max_message_bytes}"
            )

    # --- description --------------------------------------------------------------------

    def metadata_json(self, model: LoadedModel) -> str:
        """model.json of the version (dataset, training config, metrics, parity, provenance)."""
        return json.dumps(model.spec.meta, sort_keys=True, default=str)


def load_runtimes(
    specs: list[ModelSpec], settings: Settings, stop: Callable[[], bool] | None = None
) -> tuple[list[ModelRuntime], dict[str, str]]:
    """Load, check and warm up each version (blocking). A version that cannot be loaded is
    skipped and reported as {directory: message}; only StartupError (--require-gpu) is fatal.
    `stop` is asked before each version: once it says True the rest are not loaded (a reload
    that the server's shutdown abandons ends after the version in progress)."""
    threads = settings.resolved_threads()
    options = settings.runtime_options()
    use = settings.ort_providers
    runtimes: list[ModelRuntime] = []
    errors: dict[str, str] = {}
    for spec in specs:
        if stop is not None and stop():
            break
        try:
            runtimes.append(
                load_runtime(
                    spec,
                    settings.ort_providers,
                    threads,
                    require_gpu=settings.require_gpu,
                    warmup_batch=settings.resolved_max_batch_size(on_gpu=True),
                    use=use,
                    options=options,
                )
            )
            if runtimes[-1].gpu_fallback:  # no need to try CUDA again for the others
                use = [p for p in use if p != CUDA]
        except StartupError:
            raise
        except Exception as exc:  # graph does not match model.json, or ORT cannot read it
            message = str(exc)
            if not isinstance(exc, RepositoryError):
                message = f"{spec.directory}: ONNX Runtime cannot load it ({message})"
            errors[str(spec.directory)] = message
            log.error("skipping model version %s v%d: %s", spec.name, spec.version, message)
    return runtimes, errors


def served_specs(
    models: dict[str, dict[int, ModelSpec]], runtimes: list[ModelRuntime]
) -> dict[str, dict[int, ModelSpec]]:
    """The repository's table cut down to the versions that really loaded."""
    loaded = {(r.spec.name, r.spec.version) for r in runtimes}
    return {
        name: {v: s for v, s in versions.items() if (name, v) in loaded}
        for name, versions in models.items()
        if any((name, v) in loaded for v in versions)
    }


def _sampling_label(model: LoadedModel, concept: str) -> LabelStats | None:
    """The label a Sample draws around (`label:K`), or None for the prior."""
    return required(model.concepts, model.spec).label(concept) if concept else None


def _check_finite(array: np.ndarray, what: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = int((~finite).sum())
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InvalidInput(
            f"{what}: {bad} values are NaN or infinite (first at index {list(first)})"
        )
