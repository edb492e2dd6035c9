"""ONNX Runtime sessions for a model version: one per graph, on the providers asked for.

CUDA is used only where it really works: onnxruntime-gpu lists CUDAExecutionProvider as
available even on a machine without a GPU, and a session asked for CUDA there quietly runs on the
CPU. So the truth is `session.get_providers()` after creation, which is what is reported and what
`require_gpu` checks. The default providers, "auto", ask for CUDA only where `cuda_usable`
finds a GPU ORT could use, so a CPU-only machine gets no ORT ERROR line at start-up.

Each graph file is read once: its bytes are checked against model.json's sha256 and the session is
made from those same bytes, so a file replaced after the repository scan is refused (a
RepositoryError: the version is skipped and reported) rather than served unchecked. The digest of
what was loaded stays on the session (`GraphSession.sha256`), for GetModelInfo and the log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vaeserve.service.config import Settings
from vaeserve.service.cuda_probe import CUDA, requested_providers
from vaeserve.service.errors import StartupError
from vaeserve.service.repository import (
    GRAPHS,
    ModelSpec,
    RepositoryError,
    check_io,
    verified_bytes,
)

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
ORT_VERSION: str = ort.__version__


class GraphLoadError(RuntimeError):
    """ONNX Runtime could not make a session from a graph's (checked) bytes; names the file."""


def cuda_options(s: Settings) -> dict[str, str]:
    """The CUDA provider's options (device, cuDNN algorithm search, memory arena)."""
    options = {
        "device_id": str(s.cuda_device_id),
        "cudnn_conv_algo_search": s.cudnn_conv_algo_search,
        "arena_extend_strategy": s.arena_extend_strategy,
    }
    if s.gpu_mem_limit_mb:
        options["gpu_mem_limit"] = str(s.gpu_mem_limit_mb * 1024 * 1024)
    return options


def tensorrt_options(s: Settings) -> dict[str, str]:
    """The TensorRT provider's options; with a cache folder, engines are built once per shape
    and reused across restarts."""
    options = {"device_id": str(s.cuda_device_id), "trt_fp16_enable": str(s.tensorrt_fp16)}
    if s.tensorrt_cache_dir:
        cache = str(s.tensorrt_cache_dir)
        options.update(
            trt_engine_cache_enable="True",
            trt_engine_cache_path=cache,
            trt_timing_cache_enable="True",
            trt_timing_cache_path=cache,
        )
    return options


def batch_buckets(max_batch_size: int) -> list[int]:
    """Powers of two up to max_batch_size, and max_batch_size itself: the shapes a GPU session
    sees when batches are padded, all of them warmed up before readiness."""
    sizes, n = [], 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return [*sizes, max_batch_size]


@dataclass
class GraphSession:
    """One loaded graph: a float32 batch in, its outputs (batch-first) out.

    With `buckets`, a batch is padded with zero rows up to the next bucket so every run has a
    shape that was warmed up (cuDNN algorithms and TensorRT engines are chosen per shape); the
    padding rows are cut off the outputs. With `io_binding`, inputs and outputs are bound to the
    session: one host-to-device copy of the input and one device-to-host copy of each output,
    with no intermediate buffers.
    """

    graph: str
    session: ort.InferenceSession
    input_name: str
    output_names: list[str]
    io_binding: bool = False
    buckets: list[int] | None = None
    path: Path | None = None  # the file the bytes came from (a variant's under fp16)
    sha256: str = ""  # of the bytes the session was made from

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        # ORT releases the GIL while it computes; callers run this in a worker thread.
        rows = len(batch)
        if self.buckets:
            size = next((b for b in self.buckets if b >= rows), rows)
            if size > rows:
                pad = np.zeros((size - rows, *batch.shape[1:]), dtype=batch.dtype)
                batch = np.concatenate([batch, pad])
        if self.io_binding:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
            for name in self.output_names:
                binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            outputs = binding.copy_outputs_to_cpu()
        else:
            outputs = self.session.run(self.output_names, {self.input_name: batch})
        return [out[:rows] for out in outputs] if len(batch) != rows else list(outputs)


@dataclass
class ModelRuntime:
    """A model version's two sessions and what they actually run on."""

    spec: ModelSpec
    encoder: GraphSession
    decoder: GraphSession
    providers: list[str]
    requested: list[str]
    threads: int
    precision: str = "fp32"
    tensorrt: bool = False  # asked for; whether it is active is in `providers`

    @property
    def gpu_fallback(self) -> bool:
        """A GPU provider was asked for, but the sessions run on the CPU."""
        return any(p in self.requested for p in GPU_PROVIDERS) and not self.on_gpu

    @property
    def on_gpu(self) -> bool:
        return any(p in self.providers for p in GPU_PROVIDERS)

    @property
    def sha256(self) -> dict[str, str]:
        """{graph: sha256} of the bytes really loaded (the float16 variants' under fp16)."""
        return {"encoder": self.encoder.sha256, "decoder": self.decoder.sha256}


def session_options(threads: int) -> ort.SessionOptions:
    """Serving options: all graph optimizations, `threads` intra-op threads, no spinning (idle
    worker threads would otherwise burn CPU that other sessions and the event loop need)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.use_deterministic_compute = True
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def provider_list(
    requested: list[str], settings: Settings | None = None
) -> list[str | tuple[str, dict[str, str]]]:
    """ORT's providers argument, in priority order: TensorRT (when enabled, before CUDA), CUDA
    with its options, the rest as names."""
    s = settings or Settings()
    out: list[str | tuple[str, dict[str, str]]] = []
    for p in requested:
        if p == CUDA:
            if s.tensorrt:
                out.append((TENSORRT, tensorrt_options(s)))
            out.append((CUDA, cuda_options(s)))
        elif p != TENSORRT:
            out.append(p)
    return out


def graph_file(spec: ModelSpec, graph: str, fp16: bool) -> tuple[Path, str]:
    """The graph to load, and the sha256 model.json records for it: its float16 variant when
    asked for and exported."""
    variant = f"{graph}_fp16"
    if not fp16:
        return spec.graph_path(graph), spec.sha256(graph)
    if variant not in spec.meta.get("variants", {}):
        raise RepositoryError(
            f"{spec.directory}: fp16 serving asked for, but the model has no {variant} "
            "(export it with vaeserve export --fp16)"
        )
    return spec.graph_path(graph, variant), str(spec.meta["variants"][variant]["sha256"])


def _session(
    path: Path,
    data: bytes,
    options: ort.SessionOptions,
    providers: list[str | tuple[str, dict[str, str]]],
) -> ort.InferenceSession:
    """A session from the checked bytes. ORT's errors then say "from memory", so the file is
    named here. A graph with external data cannot be loaded so (ORT has no folder to find the
    data in), and those files are not covered by model.json's sha256 anyway: the exporter never
    writes them, and such a graph is refused by name."""
    try:
        return ort.InferenceSession(data, options, providers=providers)
    except Exception as exc:
        if "external data" in str(exc).lower():
            raise RepositoryError(
                f"{path}: keeps tensors in external data files, which model.json's sha256 does "
                "not cover; export the graph as one file (vaeserve export does)"
            ) from None
        raise GraphLoadError(f"{path.name}: {exc}") from exc


def open_graph(spec: ModelSpec, graph: str, use: list[str], settings: Settings) -> GraphSession:
    """Load one graph from bytes checked against model.json, on the providers `use`, and hold
    it to the signature model.json promises."""
    path, sha256 = graph_file(spec, graph, settings.fp16)
    data = verified_bytes(path, sha256)
    options = session_options(settings.resolved_threads())
    session = _session(path, data, options, provider_list(use, settings))
    check_io(spec, graph, session.get_inputs(), session.get_outputs(), path)
    return GraphSession(
        graph,
        session,
        session.get_inputs()[0].name,
        [o.name for o in session.get_outputs()],
        path=path,
        sha256=sha256,  # what `data` hashes to: verified_bytes checked it
    )


def _resolve(switch: str, on_gpu: bool) -> bool:
    return switch == "on" or (switch == "auto" and on_gpu)


def load_runtime(spec: ModelSpec, settings: Settings, use: list[str] | None = None) -> ModelRuntime:
    """Open both graphs, check where they run, and warm them up (first runs allocate).

    The settings' providers are what is reported as requested; `use` what to try, when an
    earlier model already found CUDA unusable (each failed CUDA attempt costs time and log
    noise). Every batch size the server will run, up to max_batch_size for where the sessions
    landed, is run once before the model is reported ready.
    """
    start = time.perf_counter()
    requested = requested_providers(settings)
    use = requested if use is None else use
    encoder = open_graph(spec, GRAPHS[0], use, settings)
    providers = encoder.session.get_providers()
    if CUDA in use and not any(p in providers for p in GPU_PROVIDERS):
        use = [p for p in use if p != CUDA]
    decoder = open_graph(spec, GRAPHS[1], use, settings)
    precision = "fp16" if settings.fp16 else "fp32"
    threads = settings.resolved_threads()
    runtime = ModelRuntime(
        spec, encoder, decoder, providers, requested, threads, precision, settings.tensorrt
    )
    where = f"{spec.name} v{spec.version}"
    if runtime.gpu_fallback:
        message = (
            f"{where}: CUDA was requested but ONNX Runtime runs on {providers} "
            "(no usable GPU or CUDA libraries)"
        )
        if settings.require_gpu:
            raise StartupError(message + "; --require-gpu makes this fatal")
        log.warning("%s; serving on the CPU", message)
    if settings.tensorrt and TENSORRT not in providers:
        log.warning("%s: TensorRT was requested but is not active (providers %s)", where, providers)
    buckets = batch_buckets(settings.resolved_max_batch_size(runtime.on_gpu))
    for session in (encoder, decoder):
        session.io_binding = _resolve(settings.io_binding, runtime.on_gpu)
        session.buckets = buckets if _resolve(settings.buckets, runtime.on_gpu) else None
    warmup(runtime, buckets)
    log.info(
        "loaded %s from %s on %s (%s, io_binding %s, padded buckets %s, encoder sha256 %s, "
        "decoder sha256 %s) with %d threads in %.2fs",
        where,
        spec.directory,
        providers,
        precision,
        encoder.io_binding,
        encoder.buckets is not None,
        encoder.sha256[:12],
        decoder.sha256[:12],
        threads,
        time.perf_counter() - start,
    )
    return runtime


def warmup(runtime: ModelRuntime, sizes: list[int]) -> None:
    """Run each graph at every batch size the server will use, so no request pays for a first
    run (allocation, cuDNN algorithm choice, TensorRT engine build)."""
    spec = runtime.spec
    for n in sizes:
        z = np.zeros((n, spec.latent_dim), dtype=np.float32)
        images = runtime.decoder.run(z)[0]
        runtime.encoder.run(images.astype(np.float32, copy=False))
