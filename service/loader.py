"""Loading model versions, for start-up and for reload alike: scan, open and warm up each
version's sessions, read its concepts, and wrap it for the registry. Blocking: run it in a
worker thread. A version that cannot be loaded is skipped and reported as {folder: message};
only StartupError (--require-gpu on a CPU-only machine, nothing servable at start-up) is fatal.

The CUDA-fallback rule lives here: once one version found CUDA unusable, the others are not
asked to try it again (each failed attempt costs time and log noise); what was requested stays
what the settings say, so every version reports the fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from vaeserve.service.concepts import ConceptsRead, read_concepts
from vaeserve.service.config import Settings
from vaeserve.service.cuda_probe import requested_providers
from vaeserve.service.errors import StartupError
from vaeserve.service.metrics import Metrics
from vaeserve.service.registry import ModelRegistry
from vaeserve.service.repository import ModelRepository, ModelSpec, RepositoryError
from vaeserve.service.runtime import CUDA, ModelRuntime, load_runtime

log = logging.getLogger(__name__)

Loaded = list[tuple[ModelRuntime, ConceptsRead]]


def scan(root: Path) -> ModelRepository:
    """The repository's checked versions; RepositoryError (with each folder's error) when none
    is servable."""
    return ModelRepository(root).scan()


def load_versions(
    specs: list[ModelSpec], settings: Settings, stop: Callable[[], bool] | None = None
) -> tuple[Loaded, dict[str, str]]:
    """Load, check and warm up each version and read its concepts. `stop` is asked before each
    version: once it says True the rest are not loaded (a reload that the server's shutdown
    abandons ends after the version in progress)."""
    use = requested_providers(settings)  # "auto" without a usable GPU: the CPU, quietly
    loaded: Loaded = []
    errors: dict[str, str] = {}
    for spec in specs:
        if stop is not None and stop():
            break
        try:
            runtime = load_runtime(spec, settings, use)
        except StartupError:
            raise
        except Exception as exc:  # graph does not match model.json, or ORT cannot read it
            message = str(exc)
            if not isinstance(exc, RepositoryError):
                message = f"{spec.directory}: ONNX Runtime cannot load it ({message})"
            errors[str(spec.directory)] = message
            log.error("skipping model version %s v%d: %s", spec.name, spec.version, message)
            continue
        if runtime.gpu_fallback:  # no need to try CUDA again for the others
            use = [p for p in use if p != CUDA]
        loaded.append((runtime, read_concepts(spec)))
    return loaded, errors


def open_registry(settings: Settings, metrics: Metrics | None = None) -> ModelRegistry:
    """Start-up: scan the repository, load every version, and hand them to a new registry.
    Nothing servable is a StartupError (exit 1), not a usage error."""
    root = settings.repository_root()
    try:
        repository = scan(root)
    except RepositoryError as exc:
        raise StartupError(str(exc)) from None
    specs = [spec for versions in repository.models.values() for spec in versions.values()]
    loaded, errors = load_versions(specs, settings)
    if not loaded:
        raise StartupError(
            f"{root}: no model version could be loaded: {'; '.join(errors.values())}"
        )
    on_gpu = any(runtime.on_gpu for runtime, _ in loaded)
    registry = ModelRegistry(
        settings,
        settings.resolved_max_batch_size(on_gpu),
        workers=max(4, 2 * len(loaded)),
        metrics=metrics,
    )
    models = [registry.wrap(runtime, concepts) for runtime, concepts in loaded]
    registry.swap(models, {**repository.errors, **errors})
    return registry
