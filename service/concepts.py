"""concepts.json: where a model's encoder puts each label, and the concept vectors built from it.

An optional file beside a model version (ROOT/NAME/VERSION/concepts.json), written by
`vaeserve concepts` (`vaeserve.export.concepts`). The repository's checks ignore it; the service
loads it when it loads the version, and ignores it, with a warning, when it is malformed or was
built with another encoder (its recorded sha256 differs from model.json's): statistics of one
encoder say nothing about another's latent space.

Per label K the file holds the number of images, the mean of their posterior means (mean_K), and
the covariance of the label's aggregate posterior (the covariance of the posterior means plus the
mean posterior variance: the law of total variance), with its per-dimension and principal
standard deviations as a readable summary. Named vectors: `label:K` = mean_K - overall mean,
`A-B` = mean_A - mean_B (derived, not stored), and user-defined ones (stored: mean encoding of a
positive image set minus that of a negative set).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaeserve.errors import UserError
from vaeserve.service.echo import shown
from vaeserve.service.errors import InvalidInput
from vaeserve.service.repository import ModelSpec

log = logging.getLogger(__name__)

FORMAT = "vaeserve-concepts/1"
CONCEPTS_JSON = "concepts.json"
LABEL_PREFIX = "label:"
# ListConcepts lists every ordered pair "A-B" only up to this many labels (n * (n - 1) vectors).
MAX_LISTED_LABELS = 16
VECTOR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")


class ConceptsError(UserError, ValueError):
    """A concepts.json that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class LabelStats:
    """Encodings of one label's images: count, mean [L], aggregate-posterior covariance [L, L]."""

    label: str
    count: int
    mean: np.ndarray
    covariance: np.ndarray
    factor: np.ndarray = field(repr=False, compare=False)  # C with C @ C.T = covariance


@dataclass(frozen=True)
class Vector:
    """A named direction in latent space."""

    name: str
    kind: str  # label, difference or images
    description: str
    vector: np.ndarray


@dataclass
class Concepts:
    """A model's concepts: per-label statistics, the overall mean, user-defined vectors."""

    latent_dim: int
    labels: dict[str, LabelStats]
    overall_mean: np.ndarray
    overall_count: int
    user: dict[str, Vector]
    dataset: str = ""
    encoder_sha256: str = ""

    def vector(self, name: str) -> Vector:
        """The vector called `name`; InvalidInput naming what exists when there is none."""
        if name in self.user:
            return self.user[name]
        if name.startswith(LABEL_PREFIX) and name[len(LABEL_PREFIX) :] in self.labels:
            label = self.labels[name[len(LABEL_PREFIX) :]]
            return Vector(
                name,
                "label",
                f"mean of label {label.label} minus the mean of all {self.overall_count} images",
                label.mean - self.overall_mean,
            )
        first, dash, second = name.partition("-")  # labels hold no '-' (from_json refuses it)
        if dash and first in self.labels and second in self.labels:
            a, b = self.labels[first], self.labels[second]
            return Vector(
                name,
                "difference",
                f"mean of label {a.label} minus mean of label {b.label}",
                a.mean - b.mean,
            )
        raise InvalidInput(f"concept: unknown concept {shown(name)}; {self.known()}")

    def label(self, name: str) -> LabelStats:
        """The label of a `label:K` concept (what conditional sampling draws around)."""
        key = name[len(LABEL_PREFIX) :] if name.startswith(LABEL_PREFIX) else None
        if key is None or key not in self.labels:
            raise InvalidInput(
                f"concept: sampling needs a label concept 'label:K', got {shown(name)}; "
                f"labels: {list(self.labels)}"
            )
        return self.labels[key]

    def known(self) -> str:
        labels = list(self.labels)
        shown = ", ".join(f"{LABEL_PREFIX}{k}" for k in labels[:12])
        more = f" (and {len(labels) - 12} more)" if len(labels) > 12 else ""
        user = f"; user-defined: {sorted(self.user)}" if self.user else ""
        return f"this model has {shown}{more}, and 'A-B' for two labels A and B{user}"

    def listed(self) -> list[Vector]:
        """Every vector ListConcepts shows: labels, pairs (few labels only), user-defined."""
        names = [f"{LABEL_PREFIX}{k}" for k in self.labels]
        if len(self.labels) <= MAX_LISTED_LABELS:
            names += [f"{a}-{b}" for a in self.labels for b in self.labels if a != b]
        return [self.vector(n) for n in names] + list(self.user.values())


def required(concepts: Concepts | None, spec: ModelSpec) -> Concepts:
    """The model's concepts, or InvalidInput saying it has none."""
    if concepts is None:
        raise InvalidInput(
            f"concept: {spec.name} v{spec.version} has no concepts (no usable concepts.json; "
            "build one with `vaeserve concepts`)"
        )
    return concepts


def label_statistics(
    z_mean: np.ndarray, z_log_var: np.ndarray, labels: np.ndarray, names: list[str] | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-label and overall statistics of encodings, as concepts.json stores them.

    Covariance of label K's aggregate posterior q(z | K) = mean over its images of
    N(mu_x, diag(exp(log_var_x))): Cov(mu_x) + mean(diag(exp(log_var_x))).
    """
    mu, var = np.asarray(z_mean, np.float64), np.exp(np.asarray(z_log_var, np.float64))
    per_label: dict[str, dict[str, Any]] = {}
    for value in np.unique(labels):
        rows = labels == value
        m = mu[rows]
        centred = m - m.mean(axis=0)
        cov = centred.T @ centred / max(1, len(m) - 1) + np.diag(var[rows].mean(axis=0))
        name = names[int(value)] if names and 0 <= int(value) < len(names) else str(int(value))
        per_label[name] = {
            "count": int(rows.sum()),
            "mean": _floats(m.mean(axis=0)),
            "covariance": [_floats(row) for row in cov],
            "std": _floats(np.sqrt(np.diag(cov))),
            "principal_std": _floats(np.sqrt(np.clip(np.linalg.eigvalsh(cov)[::-1], 0, None))),
        }
    overall = {"count": len(mu), "mean": _floats(mu.mean(axis=0))}
    return per_label, overall


def difference_vector(z_positive: np.ndarray, z_negative: np.ndarray) -> list[float]:
    """Mean encoding of the positive set minus that of the negative set (the book's recipe for
    a concept vector such as "smile")."""
    pos, neg = np.asarray(z_positive, np.float64), np.asarray(z_negative, np.float64)
    return _floats(pos.mean(axis=0) - neg.mean(axis=0))


def _floats(values: np.ndarray) -> list[float]:
    """float32 precision in a few JSON digits (the file stays small)."""
    return [float(f"{x:.8g}") for x in np.asarray(values, np.float64).ravel()]


def from_json(data: dict[str, Any], latent_dim: int) -> Concepts:
    """Check and read a concepts.json document (ConceptsError says what is wrong)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConceptsError(f"not a concepts file (format must be {FORMAT!r})")
    try:
        overall = data["overall"]
        overall_mean = _vector(overall["mean"], latent_dim, "overall.mean")
        labels = {str(k): _label_stats(str(k), v, latent_dim) for k, v in data["labels"].items()}
        user = {}
        for name, v in data.get("vectors", {}).items():
            if not VECTOR_NAME.match(name):
                raise ConceptsError(f"vector name {name!r}: use letters, digits, '_' and '.'")
            vec = _vector(v["vector"], latent_dim, f"vectors.{name}")
            user[name] = Vector(name, "images", str(v.get("description", "")), vec)
        return Concepts(
            latent_dim,
            labels,
            overall_mean,
            int(overall["count"]),
            user,
            str(data.get("dataset", {}).get("source", "")),
            str(data.get("model", {}).get("encoder_sha256", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ConceptsError):
            raise
        raise ConceptsError(f"missing or malformed field ({type(exc).__name__}: {exc})") from None


def _vector(values: Any, dim: int, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (dim,) or not np.isfinite(array).all():
        raise ConceptsError(f"{what}: need {dim} finite numbers, got shape {list(array.shape)}")
    return array


def _label_stats(label: str, entry: dict[str, Any], dim: int) -> LabelStats:
    if "-" in label or ":" in label:
        raise ConceptsError(f"label {label!r}: '-' and ':' are reserved for concept names")
    mean = _vector(entry["mean"], dim, f"labels.{label}.mean")
    cov = np.asarray(entry["covariance"], dtype=np.float64)
    if cov.shape != (dim, dim) or not np.isfinite(cov).all() or not np.allclose(cov, cov.T):
        raise ConceptsError(f"labels.{label}.covariance: need a finite symmetric {dim}x{dim}")
    return LabelStats(label, int(entry["count"]), mean, cov, sampling_factor(cov))


def sampling_factor(cov: np.ndarray) -> np.ndarray:
    """C with C @ C.T = cov: Cholesky (unique, so the same on every replica), with a tiny
    jitter; a covariance that is not positive definite falls back to its clipped eigenvalues."""
    jitter = 1e-9 * max(1e-12, float(np.trace(cov)) / len(cov))
    try:
        return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(cov)
        return v * np.sqrt(np.clip(w, 0.0, None))


def concepts_digest(directory: Path) -> str | None:
    """sha256 of DIRECTORY/concepts.json, None without one: what a reload compares to tell
    whether a kept version's concepts must be read again."""
    try:
        return hashlib.sha256((directory / CONCEPTS_JSON).read_bytes()).hexdigest()
    except OSError:
        return None


ConceptsRead = tuple[Concepts | None, str | None]  # (concepts, sha256 of the file read)


def read_concepts(spec: ModelSpec) -> ConceptsRead:
    """The version's concepts and the digest of its concepts.json (blocking file I/O: call it
    off the event loop). The digest is taken first, so a change made meanwhile is seen later."""
    digest = concepts_digest(spec.directory)
    return load_concepts(spec), digest


def load_concepts(spec: ModelSpec) -> Concepts | None:
    """The version's concepts.json, or None when there is none or it cannot be used (logged)."""
    path = spec.directory / CONCEPTS_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        concepts = from_json(data, spec.latent_dim)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ConceptsError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    if concepts.encoder_sha256 != spec.sha256("encoder"):
        log.warning(
            "ignoring %s: built with encoder sha256 %s, but %s v%d serves %s; rebuild it with "
            "`vaeserve concepts`",
            path,
            concepts.encoder_sha256[:12] or "(none)",
            spec.name,
            spec.version,
            spec.sha256("encoder")[:12],
        )
        return None
    log.info(
        "%s v%d: %d concept labels, %d user vectors",
        spec.name,
        spec.version,
        len(concepts.labels),
        len(concepts.user),
    )
    return concepts


def write_concepts(path: Path, document: dict[str, Any]) -> Path:
    """Write a concepts.json atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n")
    os.replace(tmp, path)
    return path
