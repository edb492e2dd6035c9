"""`vaeserve generate`: N PNG files and a contact sheet from a running server, via SampleStream.

Files are NNNNNN.png, image i of the seed's sequence, written atomically (a killed run leaves no
half file). A manifest (generate.json) records seed, model and temperature, so re-running the
same command only fetches the images still missing (streams resume at any offset) and never mixes
images of two different seeds in one folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vaeserve.errors import UserError
from vaeserve.imaging import save_grid
from vaeserve.service.client.client import VaeClient

MANIFEST = "generate.json"
CONTACT_SHEET = "contact_sheet.png"


class GenerateError(UserError, ValueError):
    """The output folder belongs to another generation (seed, model or temperature)."""


@dataclass
class GenerateResult:
    out: Path
    written: int
    skipped: int
    seed: int
    grid: Path | None


def image_name(i: int, n: int) -> str:
    return f"{i:0{max(6, len(str(n - 1)))}d}.png"


def missing_runs(out: Path, n: int) -> list[tuple[int, int]]:
    """(start, count) of each run of consecutive images not yet on disk."""
    runs: list[tuple[int, int]] = []
    for i in range(n):
        if (out / image_name(i, n)).is_file():
            continue
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def generate(
    client: VaeClient,
    out: Path,
    n: int,
    *,
    seed: int | None = None,
    temperature: float = 1.0,
    grid: Path | None = None,
    grid_max: int = 1024,
    chunk_size: int = 0,
    progress: bool = True,
    concept: str = "",
) -> GenerateResult:
    """Write images 0..n-1 of `seed` into `out` (skipping those there) and a contact sheet;
    with `concept` ("label:K"), sampled around that label instead of from the prior."""
    if n < 1:
        raise GenerateError(f"--n must be at least 1, got {n}")
    out.mkdir(parents=True, exist_ok=True)
    info = client.model_info()
    manifest = _manifest(out, seed, temperature, info.name, info.version, concept)
    seed = int(manifest["seed"])
    runs = missing_runs(out, n)
    todo = sum(count for _, count in runs)
    with tqdm(total=n, initial=n - todo, unit="img", disable=not progress, desc="generate") as bar:
        for start, count in runs:
            chunks = client.sample_stream(
                count,
                seed=seed,
                temperature=temperature,
                format="png",
                offset=start,
                chunk_size=chunk_size,
                concept=concept,
                timeout=None,
            )
            for chunk in chunks:
                for k, png in enumerate(chunk.encoded or []):
                    _write_atomic(out / image_name(chunk.offset + k, n), png)
                bar.update(len(chunk))
    sheet = None
    if grid_max > 0:
        sheet = grid or out / CONTACT_SHEET
        first = [np.asarray(Image.open(out / image_name(i, n))) for i in range(min(n, grid_max))]
        images = np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in first])
        save_grid(images, sheet)
    return GenerateResult(out, todo, n - todo, seed, sheet)


def _manifest(
    out: Path, seed: int | None, temperature: float, model: str, version: int, concept: str = ""
) -> dict[str, object]:
    """Read or create the folder's manifest; refuse to mix generations."""
    path = out / MANIFEST
    wanted = {
        "seed": seed,
        "temperature": temperature,
        "model": model,
        "version": version,
        "concept": concept,
    }
    if path.is_file():
        manifest = json.loads(path.read_text())
        manifest.setdefault("concept", "")  # written before concepts existed: the prior
        for key, value in wanted.items():
            if value is not None and manifest.get(key) != value:
                raise GenerateError(
                    f"{out} holds images with {key}={manifest.get(key)!r}, not {value!r}; "
                    "use another --out (or the same settings to resume)"
                )
        return manifest
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    manifest = {**wanted, "seed": seed}
    _write_atomic(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
