"""model.json: what a served model is, where it came from, and how well it does.

The same facts go into each graph's `metadata_props`, except the graphs' own sha256 digests:
a file cannot contain its own digest, so those live in model.json alone, which is what the
repository checks them against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaeserve.service.repository import FORMAT, MODEL_JSON, sha256_file

__all__ = ["FORMAT", "MODEL_JSON", "graph_signatures", "metadata_props", "sha256_file"]

ENCODER = "encoder.onnx"
DECODER = "decoder.onnx"
# Graph signatures: names are part of the contract between exporter, repository and service.
ENCODER_INPUT = "image"
ENCODER_OUTPUTS = ("z_mean", "z_log_var")
DECODER_INPUT = "z"
DECODER_OUTPUT = "image"
METADATA_KEY = "vaeserve.model"


def graph_signatures(channels: int, height: int, width: int, latent_dim: int) -> dict[str, Any]:
    """Inputs and outputs of both graphs, with "batch" for the dynamic axis."""
    image = ["batch", channels, height, width]
    latent = ["batch", latent_dim]
    return {
        "encoder": {
            "file": ENCODER,
            "inputs": [{"name": ENCODER_INPUT, "shape": image, "dtype": "float32"}],
            "outputs": [{"name": n, "shape": latent, "dtype": "float32"} for n in ENCODER_OUTPUTS],
        },
        "decoder": {
            "file": DECODER,
            "inputs": [{"name": DECODER_INPUT, "shape": latent, "dtype": "float32"}],
            "outputs": [{"name": DECODER_OUTPUT, "shape": image, "dtype": "float32"}],
        },
    }


def metadata_props(meta: dict[str, Any]) -> dict[str, str]:
    """String key/values for a graph's metadata_props: the headline facts plus the whole record."""
    image = meta["image"]
    return {
        "vaeserve.name": str(meta["name"]),
        "vaeserve.version": str(meta["version"]),
        "vaeserve.latent_dim": str(meta["latent_dim"]),
        "vaeserve.image_shape": "x".join(str(image[k]) for k in ("channels", "height", "width")),
        "vaeserve.image_range": "[0, 1]",
        "vaeserve.opset": str(meta["opset"]),
        METADATA_KEY: json.dumps(meta, sort_keys=True),
    }


def write_model_json(directory: Path, meta: dict[str, Any]) -> Path:
    path = directory / MODEL_JSON
    path.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return path
