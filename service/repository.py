"""The model repository: ROOT/NAME/VERSION/{encoder.onnx, decoder.onnx, model.json}.

Triton's layout. Several models and versions live side by side; a model's highest version is its
default. Reading a version (the scan) checks that model.json is whole, that both graphs exist and
match the sha256 recorded at export, and that the two graphs agree on the latent size and the image
shape. The scan's check is not what makes a graph safe to serve, as the file can change before it
is loaded: `verified_bytes` reads a graph once and checks those bytes, which are then the ones
handed to ONNX Runtime; `check_io` holds the loaded session to model.json's signature. Every
failure names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol, TypeVar

from vaeserve.errors import UserError
from vaeserve.service.echo import shown

log = logging.getLogger(__name__)

FORMAT = "vaeserve-model/1"
MODEL_JSON = "model.json"
GRAPHS = ("encoder", "decoder")
T = TypeVar("T")


class RepositoryError(UserError, ValueError):
    """A model folder that cannot be served; the message names the file and the problem.

    A scan that finds nothing servable carries each version folder's own error in `errors`
    ({folder: message}), so what reports broken versions still names every one.
    """

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.errors = dict(errors or {})


class ModelNotFoundError(LookupError):
    """No such model name or version in the repository."""


class NodeArgLike(Protocol):
    """What `check_io` reads from an onnxruntime NodeArg."""

    name: str
    shape: list[int | str | None]
    type: str


@dataclass(frozen=True)
class ModelSpec:
    """One checked model version on disk."""

    name: str
    version: int
    directory: Path
    latent_dim: int
    image_shape: tuple[int, int, int]
    meta: dict[str, Any] = field(repr=False, compare=False)

    def graph_path(self, graph: str, variant: str | None = None) -> Path:
        """Path of `encoder`/`decoder`, or of a variant such as `decoder_fp16`."""
        if variant is None:
            return self.directory / self.meta["graphs"][graph]["file"]
        return self.directory / self.meta["variants"][variant]["file"]

    def sha256(self, graph: str) -> str:
        return str(self.meta["graphs"][graph]["sha256"])


def bundled_repository() -> Path:
    """The repository shipped inside the package (the default MNIST model)."""
    return Path(str(files("vaeserve") / "models"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_bytes(path: Path, sha256: str) -> bytes:
    """The file's bytes, read once, if they hash to `sha256` (model.json's digest). Whoever loads
    a graph loads these bytes, never the path again: what runs is what was checked."""
    try:
        data = path.read_bytes()
    except OSError as exc:  # removed or replaced by a folder since the scan
        raise RepositoryError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RepositoryError(
            f"{path}: sha256 does not match model.json at load (changed after the scan?)"
        )
    return data


def read_model(directory: Path, *, verify_checksums: bool = True) -> ModelSpec:
    """Read and check ROOT/NAME/VERSION; raises RepositoryError naming what is wrong."""
    meta_path = directory / MODEL_JSON
    if not meta_path.is_file():
        raise RepositoryError(f"{meta_path}: missing (every model version needs a model.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RepositoryError(f"{meta_path}: not a vaeserve model (format must be {FORMAT!r})")
    try:
        name, version = str(meta["name"]), int(meta["version"])
        latent_dim = int(meta["latent_dim"])
        image = meta["image"]
        image_shape = (int(image["channels"]), int(image["height"]), int(image["width"]))
        graphs = meta["graphs"]
        for graph in GRAPHS:
            _ = graphs[graph]["file"], graphs[graph]["sha256"]
            _ = graphs[graph]["inputs"], graphs[graph]["outputs"]
    except (KeyError, TypeError, ValueError) as exc:
        raise RepositoryError(f"{meta_path}: missing or malformed field {exc}") from None
    if directory.name != str(version) or directory.parent.name != name:
        raise RepositoryError(
            f"{meta_path}: says model {name!r} version {version}, but lives in "
            f"{directory.parent.name}/{directory.name}"
        )
    spec = ModelSpec(name, version, directory, latent_dim, image_shape, meta)
    try:
        _check_signature_consistency(spec, meta_path)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # e.g. "inputs": [1]
        if isinstance(exc, RepositoryError):
            raise
        raise RepositoryError(f"{meta_path}: malformed graph signature ({exc!r})") from None
    for graph in GRAPHS:
        path = spec.graph_path(graph)
        if not path.is_file():
            raise RepositoryError(f"{path}: missing ({graph} graph of {name} v{version})")
        if verify_checksums and sha256_file(path) != spec.sha256(graph):
            raise RepositoryError(
                f"{path}: sha256 does not match model.json (corrupt, or changed after export)"
            )
    return spec


def _check_signature_consistency(spec: ModelSpec, meta_path: Path) -> None:
    """model.json's own graph signatures must agree with its latent_dim and image shape."""
    image = ["batch", *spec.image_shape]
    latent = ["batch", spec.latent_dim]
    graphs = spec.meta["graphs"]
    expected = {
        ("encoder", "inputs"): [image],
        ("encoder", "outputs"): [latent, latent],
        ("decoder", "inputs"): [latent],
        ("decoder", "outputs"): [image],
    }
    for (graph, side), shapes in expected.items():
        found = [list(io["shape"]) for io in graphs[graph][side]]
        if found != shapes:
            raise RepositoryError(
                f"{meta_path}: {graph} {side} have shapes {found}, but latent_dim "
                f"{spec.latent_dim} and image {spec.image_shape} need {shapes}"
            )


def check_io(
    spec: ModelSpec,
    graph: str,
    inputs: list[NodeArgLike],
    outputs: list[NodeArgLike],
    path: Path | None = None,
) -> None:
    """A loaded session's inputs and outputs must be the ones model.json promises; `path` is the
    file loaded (a variant's), named in the error."""
    path = path or spec.graph_path(graph)
    for side, found in (("inputs", inputs), ("outputs", outputs)):
        want = spec.meta["graphs"][graph][side]
        got = [(a.name, _shape(a.shape)) for a in found]
        exp = [(io["name"], _shape(io["shape"])) for io in want]
        if got != exp:
            raise RepositoryError(f"{path}: graph {side} are {got}, but model.json says {exp}")
        for arg in found:
            if arg.type != "tensor(float)":
                raise RepositoryError(f"{path}: {arg.name} is {arg.type}, expected tensor(float)")


def _shape(dims: list[Any]) -> list[int | str]:
    """Symbolic or unknown dims compare as 'batch'; fixed dims as ints."""
    return [d if isinstance(d, int) else "batch" for d in dims]


class ModelRepository:
    """All models under one root; bad versions are reported in `errors` ({folder: message}), not
    fatal, unless nothing is left."""

    def __init__(self, root: Path, *, verify_checksums: bool = True) -> None:
        self.root = Path(root)
        self.verify_checksums = verify_checksums
        self.models: dict[str, dict[int, ModelSpec]] = {}
        self.errors: dict[str, str] = {}

    def scan(self) -> ModelRepository:
        """(Re)read the root. Raises RepositoryError when the root holds no servable model, with
        the versions' errors in its `errors`."""
        if not self.root.is_dir():
            raise RepositoryError(f"{self.root}: model repository folder does not exist")
        models: dict[str, dict[int, ModelSpec]] = {}
        errors: dict[str, str] = {}
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if model_dir.name.startswith("."):
                continue
            for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
                if not version_dir.name.isdigit():
                    continue  # Triton ignores non-numeric folders too (e.g. .partial exports)
                try:
                    spec = read_model(version_dir, verify_checksums=self.verify_checksums)
                except RepositoryError as exc:
                    errors[str(version_dir)] = str(exc)
                    log.error("skipping model version: %s", exc)
                    continue
                models.setdefault(spec.name, {})[spec.version] = spec
        if not models:
            detail = "; ".join(errors.values()) or "no ROOT/NAME/VERSION/model.json found"
            raise RepositoryError(f"{self.root}: no servable model ({detail})", errors)
        self.models, self.errors = models, errors
        return self

    def resolve(self, name: str | None = None, version: int | None = None) -> ModelSpec:
        """Empty name: the default model; empty version (None or 0): its highest version."""
        return pick_version(self.models, name or "", version or 0)


def pick_version(models: Mapping[str, Mapping[int, T]], name: str = "", version: int = 0) -> T:
    """The one rule for what a request names: an empty name is the only model, or the first by
    name when there are several; version 0 is the model's highest (Triton's default)."""
    name = name or (min(models) if models else "")
    versions = models.get(name)
    if not versions:
        raise ModelNotFoundError(f"unknown model {shown(name)}; this server has {sorted(models)}")
    if not version:
        return versions[max(versions)]
    if version not in versions:
        raise ModelNotFoundError(
            f"model {shown(name)} has no version {version}; it has {sorted(versions)}"
        )
    return versions[version]
