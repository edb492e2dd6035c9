"""The table of served model versions: the one place that says which versions are served, which
one an empty name or version means, and which folders could not be served.

A version is served as a `LoadedModel`: its sessions (`ModelRuntime`), a batcher in front of each
graph, and its concepts. The table is replaced whole by `swap`, in one synchronous step on the
event loop, so each request resolves against the old table or the new one, never a mix; batchers
no longer in the table are retired (a request already holding one finishes on it, as a retired
batcher restarts for late pieces, and its sessions are freed with its last user). Loading is
`loader.py`'s job; deciding what a reload changes is `reload.py`'s.
"""

from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vaeserve.service.batching import Batcher
from vaeserve.service.concepts import Concepts, ConceptsRead
from vaeserve.service.config import Settings
from vaeserve.service.metrics import Metrics
from vaeserve.service.repository import ModelSpec, pick_version
from vaeserve.service.runtime import ModelRuntime

Key = tuple[str, int]


@dataclass(frozen=True)
class LoadedModel:
    """A model version ready to serve: its sessions and a batcher in front of each graph."""

    runtime: ModelRuntime
    encoder: Batcher
    decoder: Batcher
    concepts: Concepts | None = None  # from concepts.json beside the graphs, when usable
    concepts_sha256: str | None = None  # of the concepts.json read (None: there was none)

    @property
    def spec(self) -> ModelSpec:
        return self.runtime.spec

    @property
    def key(self) -> Key:
        return (self.spec.name, self.spec.version)


class ModelRegistry:
    """Served versions of one repository, the batchers' shared threads, and the folders that
    cannot be served (`errors`, {folder: message}: what the broken-version metrics show)."""

    def __init__(
        self, settings: Settings, max_batch_size: int, workers: int, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.root = settings.repository_root()
        self.max_batch_size = max_batch_size  # resolved once, from where the first load ran
        self.metrics = metrics
        # Sized once at start-up: a reload that adds versions shares these threads.
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vaeserve-ort")
        self.table: dict[Key, LoadedModel] = {}
        self.errors: dict[str, str] = {}
        self._by_name: dict[str, dict[int, LoadedModel]] = {}
        self._retired: weakref.WeakSet[Batcher] = weakref.WeakSet()
        self._started = False

    def wrap(self, runtime: ModelRuntime, concepts: ConceptsRead) -> LoadedModel:
        """A loaded runtime and its concepts behind two new batchers (started by `swap` once the
        registry runs), reported in metrics."""
        spec = runtime.spec
        if self.metrics:
            self.metrics.model.labels(spec.name, str(spec.version)).info(
                {"providers": ",".join(runtime.providers), "threads": str(runtime.threads)}
            )
        return LoadedModel(
            runtime, self._batcher(runtime, "encoder"), self._batcher(runtime, "decoder"), *concepts
        )

    def _batcher(self, runtime: ModelRuntime, graph: str) -> Batcher:
        s = self.settings
        session = runtime.encoder if graph == "encoder" else runtime.decoder
        return Batcher(
            session.run,
            self.executor,
            max_batch_size=self.max_batch_size,
            max_delay_s=s.max_delay_ms / 1000.0,
            wait_when_idle=s.batch_wait_when_idle,
            max_queue=s.max_queue,
            labels=(runtime.spec.name, str(runtime.spec.version), graph),
            metrics=self.metrics,
        )

    def swap(self, models: list[LoadedModel], errors: dict[str, str]) -> None:
        """Serve exactly `models` from now on, and report `errors`; one step, see the module
        docstring. Batchers new to the table start (once the registry runs); the others'
        are retired."""
        table = {m.key: m for m in sorted(models, key=lambda m: m.key)}
        kept = {id(b) for m in table.values() for b in (m.encoder, m.decoder)}
        old, self.table, self.errors = self.table, table, dict(errors)
        by_name: dict[str, dict[int, LoadedModel]] = {}
        for (name, version), model in table.items():
            by_name.setdefault(name, {})[version] = model
        self._by_name = by_name
        old_batchers = {id(b) for m in old.values() for b in (m.encoder, m.decoder)}
        if self._started:
            for model in table.values():
                for batcher in (model.encoder, model.decoder):
                    if id(batcher) not in old_batchers:
                        batcher.start()
        for key, model in old.items():
            for batcher in (model.encoder, model.decoder):
                if id(batcher) not in kept:
                    batcher.retire()
                    self._retired.add(batcher)
            if self.metrics and key not in table:
                self.metrics.model.remove(key[0], str(key[1]))
        self.report(self.errors)

    def report(self, errors: dict[str, str]) -> None:
        """Publish the folders that cannot be served (after a swap, or a reload that failed)."""
        if self.metrics:
            self.metrics.report_model_errors(errors)

    def resolve(self, name: str = "", version: int = 0) -> LoadedModel:
        """The model for a request; empty name = the default model, version 0 = its highest."""
        return pick_version(self._by_name, name, version)

    def versions(self) -> list[Key]:
        """(name, version) of every served version, sorted."""
        return list(self.table)

    def start(self) -> None:
        """Start the batchers (needs the running event loop)."""
        self._started = True
        for model in self.table.values():
            model.encoder.start()
            model.decoder.start()

    async def stop(self) -> None:
        """Stop every batcher (queued pieces get Unavailable) and the ONNX Runtime threads."""
        for model in self.table.values():
            await model.encoder.stop()
            await model.decoder.stop()
        for batcher in list(self._retired):  # retired ones a late request restarted
            await batcher.stop()
        self.executor.shutdown(wait=True)
