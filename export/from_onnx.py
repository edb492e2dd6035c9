"""Rebuild the PyTorch VAE from exported graphs, using the graphs' own initializers.

The exporter names every initializer after the module parameter it came from (the decoder's
sub-pixel kernels too, which are turned back into plain weights), so a served model can be
compared with (or benchmarked against) PyTorch without its training checkpoint.
"""

from __future__ import annotations

import onnx
import torch

from vaeserve.export.subpixel import plain_initializers
from vaeserve.service.repository import ModelSpec
from vaeserve.training.config import ModelConfig
from vaeserve.training.model import VAE


def torch_model_from_spec(spec: ModelSpec) -> VAE:
    """The VAE of a repository model version, in eval mode, with the weights of its graphs.

    The network's shape is model.json's training.model_config (the book's network for models
    that predate it); a Gaussian likelihood's scale comes from `likelihood_scale`."""
    c, h, w = spec.image_shape
    recorded = (spec.meta.get("training") or {}).get("model_config") or {}
    cfg = ModelConfig.from_dict(
        {**recorded, "height": h, "width": w, "channels": c, "latent_dim": spec.latent_dim}
    )
    model = VAE(cfg)
    wanted = model.state_dict()
    state = {}
    for graph in ("encoder", "decoder"):
        graph_proto = onnx.load(str(spec.graph_path(graph))).graph
        for name, array in plain_initializers(graph_proto).items():
            key = f"{graph}.{name}"
            if key in wanted:
                state[key] = torch.from_numpy(array.copy())
    for key, value in wanted.items():  # the ONNX optimizer drops all-zero biases
        if key.endswith(".bias") and key not in state and f"{key[:-4]}weight" in state:
            state[key] = torch.zeros_like(value)
    if cfg.likelihood == "gaussian":
        sigma = torch.tensor(spec.meta["likelihood_scale"], dtype=torch.float32)
        state["log_scale"] = torch.log(sigma)
    model.load_state_dict(state)  # strict: every other parameter must come from the graphs
    return model.eval()
