"""Build a model version's concepts.json with its exported encoder (ONNX Runtime, no torch).

`vaeserve concepts` runs this on the serving side of the fence: the labelled dataset is encoded
by the very encoder.onnx the service serves (posterior means, deterministic), so the statistics
describe the latent space clients will edit. The format is `vaeserve.service.concepts`.
"""

from __future__ import annotations

import functools
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from vaeserve.errors import UserError
from vaeserve.export.onnx_eval import cpu_session, run_batched
from vaeserve.imaging import to_float
from vaeserve.service.concepts import (
    CONCEPTS_JSON,
    FORMAT,
    VECTOR_NAME,
    difference_vector,
    from_json,
    label_statistics,
    write_concepts,
)
from vaeserve.service.repository import ModelSpec, read_model
from vaeserve.training.data import ImageData, load_dataset

log = logging.getLogger(__name__)


class ConceptBuildError(UserError, ValueError):
    """The concepts cannot be built as asked (no labels, wrong image size, bad name)."""


@functools.lru_cache(maxsize=4)
def _encoder(path: Path, sha256: str) -> ort.InferenceSession:
    """One session per encoder file and digest: a build encodes the dataset and every image set
    of --from-images with it."""
    return cpu_session(path)


def encode(spec: ModelSpec, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of uint8 NCHW images, by the version's encoder.onnx."""
    session = _encoder(spec.graph_path("encoder"), spec.sha256("encoder"))
    z_mean, z_log_var = run_batched(session, to_float(images), batch=512)
    return z_mean, z_log_var


def load_images(path: Path | str, spec: ModelSpec) -> ImageData:
    """A dataset (any format `load_dataset` reads) at the model's image shape."""
    c, h, w = spec.image_shape
    data = load_dataset(path, channels=c, height=h, width=w)
    if data.image_shape != spec.image_shape:
        raise ConceptBuildError(
            f"{path}: images are {list(data.image_shape)}, but {spec.name} v{spec.version} "
            f"takes {list(spec.image_shape)}"
        )
    return data


def build_concepts(
    directory: Path,
    *,
    data: Path | str | None = None,
    vectors: dict[str, tuple[Path | str, Path | str]] | None = None,
    limit: int | None = None,
    command: str | None = None,
) -> Path:
    """Write DIRECTORY/concepts.json: label statistics from `data` (a labelled dataset) and/or
    user vectors {name: (positive images, negative images)}.

    Without `data`, the label statistics of the existing concepts.json are kept (it must have
    been built with the same encoder); user vectors of the same name are replaced.
    """
    spec = read_model(Path(directory))
    vectors = vectors or {}
    if data is None and not vectors:
        raise ConceptBuildError("nothing to do: give a labelled dataset and/or image sets")
    for name in vectors:
        if not VECTOR_NAME.match(name):
            raise ConceptBuildError(
                f"vector name {name!r}: start with a letter or '_', then letters, digits, "
                "'_' or '.' (':' and '-' are kept for label:K and A-B)"
            )
    document = _existing(spec) if data is None else _from_dataset(spec, data, limit)
    document.setdefault("vectors", {})
    for name, (positive, negative) in vectors.items():
        document["vectors"][name] = _user_vector(spec, positive, negative)
    document["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if command:
        document["command"] = command
    from_json(document, spec.latent_dim)  # what the service will load must load
    return write_concepts(spec.directory / CONCEPTS_JSON, document)


def _from_dataset(spec: ModelSpec, path: Path | str, limit: int | None) -> dict[str, Any]:
    images = load_images(path, spec)
    if images.labels is None:
        raise ConceptBuildError(f"{path}: no labels (concepts need a labelled dataset)")
    if limit is not None:
        images = images.subset(np.arange(min(limit, len(images))))
    z_mean, z_log_var = encode(spec, images.images)
    labels, overall = label_statistics(z_mean, z_log_var, images.labels, images.label_names)
    log.info("encoded %d images of %d labels from %s", len(images), len(labels), path)
    return {
        "format": FORMAT,
        "model": _model_record(spec),
        "dataset": {"source": str(path), "images": len(images)},
        "encoding": "posterior mean (z_mean) of encoder.onnx",
        "overall": overall,
        "labels": labels,
        "vectors": _kept_vectors(spec),
    }


def _model_record(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "version": spec.version,
        "latent_dim": spec.latent_dim,
        "encoder_sha256": spec.sha256("encoder"),
    }


def _existing(spec: ModelSpec) -> dict[str, Any]:
    path = spec.directory / CONCEPTS_JSON
    if not path.is_file():
        raise ConceptBuildError(f"{path}: missing; build the label statistics first with --data")
    document: dict[str, Any] = json.loads(path.read_text())
    if document.get("model", {}).get("encoder_sha256") != spec.sha256("encoder"):
        raise ConceptBuildError(f"{path}: built with another encoder; rebuild it with --data")
    return document


def _kept_vectors(spec: ModelSpec) -> dict[str, Any]:
    """User vectors of an existing concepts.json built with this same encoder."""
    try:
        return dict(_existing(spec).get("vectors", {}))
    except (ConceptBuildError, ValueError):
        return {}


def _user_vector(spec: ModelSpec, positive: Path | str, negative: Path | str) -> dict[str, Any]:
    pos, neg = load_images(positive, spec), load_images(negative, spec)
    z_pos, _ = encode(spec, pos.images)
    z_neg, _ = encode(spec, neg.images)
    return {
        "vector": difference_vector(z_pos, z_neg),
        "description": f"mean of {len(pos)} images in {positive} minus mean of {len(neg)} "
        f"images in {negative}",
        "positive": {"source": str(positive), "images": len(pos)},
        "negative": {"source": str(negative), "images": len(neg)},
    }
