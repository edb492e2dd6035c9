"""Model reload: rescan the repository and swap the served versions without failing a request.

A reload (SIGHUP, or a change seen by polling with `poll_repository_s`) scans the repository and
loads and warms up only the versions that are new or changed, in a worker thread, so the event
loop keeps serving meanwhile. It then swaps the whole model table in one step (registry.swap):
new requests see the new versions (an empty version is still the highest), requests already
running finish on the sessions they started with. What goes wrong never costs what is served:

- the scan fails (root gone, nothing servable): the old table stays, result `failed`;
- a new or changed version does not load (also: a graph changed between the scan and the load,
  which the load's own sha256 check refuses): it is skipped and reported, result `partial`;
- a served version is broken on disk now (corrupt or missing graph, sha256 mismatch): it keeps
  serving from memory and is reported, result `partial` (`failed` when nothing else in the
  repository is servable, as the scan then fails; the version keeps serving all the same);
- a version whose folder was removed stops being served (unless the reload fails: then it keeps
  serving from memory, and is reported);
- a kept version whose concepts.json was written, changed or removed gets its concepts read
  again (its sessions are kept), reported in `concepts`, result `ok`;
- the server starts stopping meanwhile: the reload ends after the version it is loading and
  changes nothing, result `stopped` (logged at INFO);
- an unexpected exception (a bug): logged with its traceback, nothing changes, result `error`.

Each reload is one log line and one count in `vaeserve_reloads_total{result}`. After every reload
that gets as far as a scan (all but `stopped` and `error`), `vaeserve_model_version_broken` and
`vaeserve_model_errors` list each version folder that cannot be served from disk: the ones that
did not scan or load, and, when the reload failed, every served version not servable on disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from vaeserve.service import loader
from vaeserve.service.concepts import ConceptsRead, concepts_digest, read_concepts
from vaeserve.service.errors import StartupError
from vaeserve.service.metrics import Metrics
from vaeserve.service.registry import Key, LoadedModel, ModelRegistry
from vaeserve.service.repository import ModelSpec, RepositoryError

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass
class ReloadResult:
    """What a reload did: `result` is ok, partial, failed, unchanged, stopped or error."""

    result: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    serving: list[str] = field(default_factory=list)
    concepts: list[str] = field(default_factory=list)  # kept versions whose concepts were reread


def fingerprint(root: Path) -> Fingerprint:
    """(path, size, mtime_ns) of every file in ROOT/NAME/VERSION/: changes whenever a version
    is added, removed or rewritten, and costs a few stat calls, so it can be polled."""
    entries: list[tuple[str, int, int]] = []
    try:
        for model_dir in root.iterdir():
            if not model_dir.is_dir() or model_dir.name.startswith("."):
                continue
            for version_dir in model_dir.iterdir():
                if not version_dir.is_dir() or not version_dir.name.isdigit():
                    continue
                for path in version_dir.iterdir():
                    stat = path.stat()
                    entries.append((str(path), stat.st_size, stat.st_mtime_ns))
    except OSError as exc:  # the root vanished or changes under us: that is a change too
        entries.append((f"<{type(exc).__name__}>", 0, 0))
    return tuple(sorted(entries))


def _label(key: Key) -> str:
    return f"{key[0]} v{key[1]}"


def _served(table: dict[Key, LoadedModel]) -> list[str]:
    return [_label(k) for k in sorted(table)]


class Reloader:
    """Reloads one registry's models from its repository; one reload at a time."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.settings = registry.settings
        self.metrics = metrics
        self.root = registry.root
        self.closed = False  # set by close(): a reload in progress is discarded
        self._lock = asyncio.Lock()

    def close(self) -> None:
        """The server is stopping: a reload in progress ends after the version it loads and
        changes nothing; polling stops."""
        self.closed = True

    async def reload(self, reason: str = "requested") -> ReloadResult:
        """One reload, logged and counted whatever happens (never raises but CancelledError)."""
        exc_info = False
        try:
            async with self._lock:
                result = await self._reload()
        except Exception as exc:  # a bug: report it; the models keep serving
            exc_info = True
            error = f"{type(exc).__name__}: {exc}"
            result = ReloadResult(
                "error", errors={"reload": error}, serving=_served(self.registry.table)
            )
        if self.metrics:
            self.metrics.reloads.labels(result.result).inc()
        level = logging.ERROR if result.result in ("failed", "error") else logging.INFO
        log.log(
            level,
            "reload (%s): %s; serving %s; added %s; removed %s; concepts reread %s; errors %s",
            reason,
            result.result,
            result.serving,
            result.added,
            result.removed,
            result.concepts,
            result.errors,
            exc_info=exc_info,
        )
        return result

    async def watch(self, interval_s: float, last: Fingerprint | None = None) -> None:
        """Poll the repository every `interval_s` seconds and reload when it changed since `last`
        (taken before the models were loaded, so a change made while they loaded is not missed;
        None: now)."""
        if last is None:
            last = await asyncio.to_thread(fingerprint, self.root)
        while not self.closed:
            await asyncio.sleep(interval_s)
            now = await asyncio.to_thread(fingerprint, self.root)
            if now == last:
                continue
            last = now  # taken before the scan: a change during the reload triggers another
            await self.reload("repository changed")  # logs and counts its own errors

    def _stopping(self) -> bool:
        return self.closed

    def _failed(
        self, errors: dict[str, str], exc: BaseException | None = None, why: str = ""
    ) -> ReloadResult:
        """A reload that changes nothing: the old table keeps serving. The broken-version metrics
        still get every folder that cannot be served from disk. With `why`, none of the served
        versions can either (the scan found nothing servable, or their folders are gone): each
        one not listed yet is added, `why` saying what became of it."""
        errors = dict(errors)
        if why:
            for model in self.registry.table.values():
                folder = str(model.spec.directory)
                errors.setdefault(folder, f"{folder}: {why}; still served from memory")
        self.registry.report(errors)
        if exc is not None:
            errors[str(self.root)] = str(exc)
        return ReloadResult("failed", errors=errors, serving=_served(self.registry.table))

    async def _reload(self) -> ReloadResult:
        old = self.registry.table
        stopped = ReloadResult("stopped", serving=_served(old))
        if self.closed:
            return stopped
        try:
            scanned = await asyncio.to_thread(loader.scan, self.root)
        except (RepositoryError, OSError) as exc:
            broken = getattr(exc, "errors", {})  # each version's own error, when there were any
            return self._failed(broken, exc, "not servable on disk (the reload's scan failed)")
        if self.closed:
            return stopped
        kept: dict[Key, LoadedModel] = {}
        to_load: list[ModelSpec] = []
        for name, versions in scanned.models.items():
            for version, spec in versions.items():
                current = old.get((name, version))
                if current is not None and _same(current.spec, spec):
                    kept[(name, version)] = current
                else:
                    to_load.append(spec)
        errors = dict(scanned.errors)
        try:
            loaded, load_errors = await asyncio.to_thread(
                loader.load_versions, to_load, self.settings, self._stopping
            )
        except StartupError as exc:  # --require-gpu and the new sessions are on the CPU
            errors.update((str(spec.directory), str(exc)) for spec in to_load)
            return self._failed(errors, exc)
        errors.update(load_errors)
        concepts = await asyncio.to_thread(_changed_concepts, kept)
        if self.closed:  # the server is stopping: what was loaded is dropped
            return stopped
        table = {key: _with(model, concepts.get(key)) for key, model in kept.items()}
        for runtime, read in loaded:
            table[(runtime.spec.name, runtime.spec.version)] = self.registry.wrap(runtime, read)
        for key, model in old.items():  # broken on disk now: keep serving it from memory
            if key not in table and str(model.spec.directory) in errors:
                table[key] = model
        if not table:  # nothing new loaded, and the served folders are gone (broken ones are kept)
            return self._failed(errors, why="removed, and nothing else in the repository loaded")
        self.registry.swap(list(table.values()), errors)  # one event-loop step: the whole table
        changed = [k for k in sorted(table) if old.get(k) is not table[k]]
        added = [_label(k) for k in changed if k not in concepts]
        removed = [_label(k) for k in sorted(old) if k not in table]
        reread = [_label(k) for k in sorted(concepts)]
        outcome = "partial" if errors else "ok" if added or removed or reread else "unchanged"
        return ReloadResult(outcome, added, removed, errors, _served(table), reread)


def _with(model: LoadedModel, read: ConceptsRead | None) -> LoadedModel:
    """A kept version, with its concepts read again when its concepts.json changed (same
    sessions and batchers: only the concepts are new)."""
    if read is None:
        return model
    concepts, digest = read
    return dataclasses.replace(model, concepts=concepts, concepts_sha256=digest)


def _changed_concepts(kept: dict[Key, LoadedModel]) -> dict[Key, ConceptsRead]:
    """Kept versions whose concepts.json is not the one read (new, rewritten or removed), with
    their concepts read again: a kept version's sessions stay, but its concepts must not."""
    changed: dict[Key, ConceptsRead] = {}
    for key, model in kept.items():
        if concepts_digest(model.spec.directory) != model.concepts_sha256:
            changed[key] = read_concepts(model.spec)
    return changed


def _same(a: ModelSpec, b: ModelSpec) -> bool:
    """The same files as loaded: same folder and model.json (which holds each graph's sha256)."""
    return a.directory == b.directory and a.meta == b.meta
