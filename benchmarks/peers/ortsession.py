"""The ONNX Runtime session every peer runs, with vaeserve's serving options.

This copy exists because the PyTriton and MLServer processes run in the peers' venv, where
vaeserve is not installed; `benchmarks.peers.run` checks at start that these options equal
`vaeserve.service.runtime.session_options`, so no peer gets a differently tuned session.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def session_options(threads: int) -> ort.SessionOptions:
    """vaeserve's options: full graph optimizations, `threads` intra-op threads, no spinning."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.use_deterministic_compute = True
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class Decoder:
    """decoder.onnx on the CPU: float32 latents (N, L) in, float32 images (N, C, H, W) out."""

    def __init__(self, path: str, threads: int) -> None:
        self.session = ort.InferenceSession(
            path, session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.latent_dim = int(self.session.get_inputs()[0].shape[1])
        self.image_shape = tuple(int(d) for d in self.session.get_outputs()[0].shape[1:])
        self.run(np.zeros((1, self.latent_dim), dtype=np.float32))  # first runs allocate

    def run(self, z: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: z})[0]
        return np.asarray(out, dtype=np.float32)
