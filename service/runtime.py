"""ONNX Runtime sessions for a model version: one per graph, on the providers asked for.

CUDA is used only where it really works: onnxruntime-gpu lists CUDAExecutionProvider as
available even on a machine without a GPU, and a session asked for CUDA there quietly runs on the
CPU. So the truth is `session.get_providers()` after creation, which is what is reported and what
`require_gpu` checks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from vaeserve.service.errors import StartupError
from vaeserve.service.repository import GRAPHS, ModelSpec, check_io

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Deterministic cuDNN algorithm choice, so replicas on the same GPU model give the same bytes.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "DEFAULT"}


@dataclass
class GraphSession:
    """One loaded graph: a float32 batch in, its outputs (batch-first) out."""

    graph: str
    session: ort.InferenceSession
    input_name: str
    output_names: list[str]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        # ORT releases the GIL while it computes; callers run this in a worker thread.
        return list(self.session.run(self.output_names, {self.input_name: batch}))


@dataclass
class ModelRuntime:
    """A model version's two sessions and what they actually run on."""

    spec: ModelSpec
    encoder: GraphSession
    decoder: GraphSession
    providers: list[str]
    requested: list[str]
    threads: int

    @property
    def gpu_fallback(self) -> bool:
        """CUDA was asked for, but the sessions run on the CPU."""
        return CUDA in self.requested and CUDA not in self.providers


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


def provider_list(requested: list[str]) -> list[str | tuple[str, dict[str, str]]]:
    """ORT's providers argument: CUDA with its options where asked for, the rest as names."""
    return [(p, dict(CUDA_OPTIONS)) if p == CUDA else p for p in requested]


def open_graph(spec: ModelSpec, graph: str, requested: list[str], threads: int) -> GraphSession:
    """Load one graph and hold it to the signature model.json promises."""
    path = spec.graph_path(graph)
    session = ort.InferenceSession(
        str(path), session_options(threads), providers=provider_list(requested)
    )
    check_io(spec, graph, session.get_inputs(), session.get_outputs())
    return GraphSession(
        graph,
        session,
        session.get_inputs()[0].name,
        [o.name for o in session.get_outputs()],
    )


def load_runtime(
    spec: ModelSpec,
    requested: list[str],
    threads: int,
    *,
    require_gpu: bool = False,
    warmup_batch: int = 1,
    use: list[str] | None = None,
) -> ModelRuntime:
    """Open both graphs, check where they run, and warm them up (first runs allocate).

    `requested` is what the settings ask for (reported); `use` what to try, when an earlier
    model already found CUDA unusable (each failed CUDA attempt costs time and log noise).
    """
    start = time.perf_counter()
    use = requested if use is None else use
    encoder = open_graph(spec, GRAPHS[0], use, threads)
    providers = encoder.session.get_providers()
    if CUDA in use and CUDA not in providers:
        use = [p for p in use if p != CUDA]
    decoder = open_graph(spec, GRAPHS[1], use, threads)
    runtime = ModelRuntime(spec, encoder, decoder, providers, requested, threads)
    where = f"{spec.name} v{spec.version}"
    if runtime.gpu_fallback:
        message = (
            f"{where}: CUDA was requested but ONNX Runtime runs on {providers} "
            "(no usable GPU or CUDA libraries)"
        )
        if require_gpu:
            raise StartupError(message + "; --require-gpu makes this fatal")
        log.warning("%s; serving on the CPU", message)
    warmup(runtime, warmup_batch)
    log.info(
        "loaded %s from %s on %s with %d threads in %.2fs",
        where,
        spec.directory,
        providers,
        threads,
        time.perf_counter() - start,
    )
    return runtime


def warmup(runtime: ModelRuntime, batch: int) -> None:
    """Run each graph at batch 1 and at `batch`, so the first requests do not pay for setup."""
    spec = runtime.spec
    for n in sorted({1, max(1, batch)}):
        z = np.zeros((n, spec.latent_dim), dtype=np.float32)
        images = runtime.decoder.run(z)[0]
        runtime.encoder.run(images.astype(np.float32, copy=False))
