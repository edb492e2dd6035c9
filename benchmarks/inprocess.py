"""The limit and the alternative: ONNX Runtime and PyTorch eager in-process, same weights.

ONNX Runtime sessions are built exactly as the service builds them (`session_options`), so the
service's figures can be read as a fraction of this limit.
"""

from __future__ import annotations

import logging

import numpy as np

from benchmarks.timing import images_per_second
from vaeserve.service.config import Settings
from vaeserve.service.repository import ModelSpec
from vaeserve.service.runtime import CPU, GraphSession, open_graph

log = logging.getLogger(__name__)


def session(spec: ModelSpec, graph: str, threads: int, providers: list[str] | None) -> GraphSession:
    """One graph's session, opened by the service's own code with `threads` intra-op threads."""
    return open_graph(spec, graph, providers or [CPU], Settings(threads=threads))


def ort_throughput(
    spec: ModelSpec, batches: list[int], threads: int, providers: list[str] | None = None
) -> dict[str, dict[int, float]]:
    """images/s of session.run per graph and batch size, on the providers the service uses."""
    rng = np.random.default_rng(0)
    out: dict[str, dict[int, float]] = {"encoder": {}, "decoder": {}}
    encoder = session(spec, "encoder", threads, providers)
    decoder = session(spec, "decoder", threads, providers)
    log.info("onnxruntime providers: %s", encoder.session.get_providers())
    for n in batches:
        images = rng.random((n, *spec.image_shape), dtype=np.float32)
        z = rng.standard_normal((n, spec.latent_dim)).astype(np.float32)
        out["encoder"][n] = images_per_second(lambda x=images: encoder.run(x), n)
        out["decoder"][n] = images_per_second(lambda x=z: decoder.run(x), n)
        log.info(
            "onnxruntime batch %5d: encoder %9.0f img/s, decoder %9.0f img/s",
            n,
            out["encoder"][n],
            out["decoder"][n],
        )
    return out


def torch_throughput(
    spec: ModelSpec, batches: list[int], threads: int
) -> dict[str, dict[int, float]]:
    """images/s of PyTorch eager (inference mode) with the graphs' own weights."""
    import torch

    from vaeserve.export.from_onnx import torch_model_from_spec

    torch.set_num_threads(threads)
    model = torch_model_from_spec(spec)
    rng = np.random.default_rng(0)
    out: dict[str, dict[int, float]] = {"encoder": {}, "decoder": {}}
    with torch.inference_mode():
        for n in batches:
            images = torch.from_numpy(rng.random((n, *spec.image_shape), dtype=np.float32))
            z = torch.from_numpy(rng.standard_normal((n, spec.latent_dim)).astype(np.float32))
            out["encoder"][n] = images_per_second(lambda x=images: model.encode(x), n)
            out["decoder"][n] = images_per_second(lambda x=z: model.decode(x), n)
            log.info(
                "pytorch     batch %5d: encoder %9.0f img/s, decoder %9.0f img/s",
                n,
                out["encoder"][n],
                out["decoder"][n],
            )
    return out
