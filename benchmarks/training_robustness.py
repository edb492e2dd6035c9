"""`make bench-training`: does training stay healthy across seeds and datasets?

Before the initialisation fix (docs/training.md, "Why runs collapsed (and the fix)") one seed in
three to six collapsed silently: the encoder dead, KL ~0.02 nats, every sample the same blur.
This benchmark is the evidence that it no longer happens: 10 seeds on each of five datasets
(MNIST, inverted MNIST, rotated MNIST, the synthetic shapes set, a synthetic 64x64 RGB set), 8
epochs on at most 4,000 images each, every other setting the default. It prints one line per
finished run and a table per dataset (collapses, the spread of validation NELBO across seeds),
and writes benchmarks/results/training_robustness.{json,png} and the block of docs/training.md
between the bench-training markers. Exit status 1 when any run collapsed (or failed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import textwrap
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.host import cpu_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
JSON_NAME = "training_robustness.json"
PNG_NAME = "training_robustness.png"
DOC = REPO / "docs" / "training.md"
BEGIN = "<!-- bench-training:begin -->"
END = "<!-- bench-training:end -->"
SECTION = "## Robustness across seeds and datasets"
NEXT_SECTION = "## Why runs collapsed (and the fix)"
DEFAULT_MNIST = "../shared/datasets/mnist/t10k-images-idx3-ubyte.gz"

# The acceptance: what the verdict line checks.
MIN_DATASETS = 4
MIN_SEEDS = 10
MAX_IMAGES = 4000
EPOCHS = 8

MNIST_IMAGES = 4000
SHAPES_IMAGES = 4000
SCENES_IMAGES = 2000  # each 64x64 RGB image costs about 10x an MNIST one
SCENES_ARCH: dict[str, Any] = {
    "stages": (32, 64, 128),
    "hidden": 128,
    "likelihood": "gaussian",
}
SCENES_LATENT = 16
QUICK_IMAGES = 300
QUICK_SCENES_ARCH: dict[str, Any] = {**SCENES_ARCH, "stages": (32, 64)}
ROTATION_SEED = 0
VAL_FRACTION = 0.1


def say(text: str) -> None:
    """One line, flushed: a log of a long run shows progress as it happens."""
    print(text, flush=True)


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Dataset:
    """One benchmark dataset: an .npz file plus the network and latent size trained on it."""

    name: str
    path: str
    images: int
    shape: tuple[int, int, int]
    latent_dim: int = 2
    architecture: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def save_npz(path: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    """A keras-style archive (x_train, y_train), the form `--data` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"x_train": images}
    if labels is not None:
        arrays["y_train"] = labels
    np.savez_compressed(path, **arrays)
    return path


def rotate_each(images: np.ndarray, seed: int = ROTATION_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Each N x 1 x H x W image turned by its own uniform angle in [-180, 180) degrees
    (bilinear, corners filled with 0): the digits' orientation is no longer a free cue."""
    from PIL import Image

    angles = np.random.default_rng(seed).uniform(-180.0, 180.0, size=len(images))
    out = np.empty_like(images)
    for i, (image, angle) in enumerate(zip(images, angles, strict=True)):
        pil = Image.fromarray(image[0])
        out[i, 0] = np.asarray(pil.rotate(float(angle), Image.Resampling.BILINEAR, fillcolor=0))
    return out, angles


def mnist_datasets(mnist: Path, work: Path, n: int = MNIST_IMAGES) -> list[Dataset]:
    """mnist, mnist-inverted and mnist-rotated from the first `n` images of an IDX file."""
    from vaeserve.training.data import load_idx_images

    data = load_idx_images(mnist)
    images = data.images[:n]
    labels = None if data.labels is None else data.labels[:n]
    rotated, _ = rotate_each(images)
    variants = {
        "mnist": (images, f"the first {len(images):,} images of {mnist.name}"),
        "mnist-inverted": (255 - images, "the same images, 255 - x"),
        "mnist-rotated": (rotated, "the same images, each rotated by a seeded angle"),
    }
    shape = tuple(int(d) for d in images.shape[1:])
    return [
        Dataset(name, str(save_npz(work / f"{name}.npz", x, labels)), len(x), shape, note=note)
        for name, (x, note) in variants.items()
    ]


def shapes_dataset(work: Path, n: int) -> Dataset:
    """The generated shapes set (training/synthetic.py), 28x28 grey."""
    from vaeserve.training.synthetic import make_shapes

    images, labels = make_shapes(n)
    path = save_npz(work / f"shapes-{n}.npz", images, labels)
    return Dataset("shapes", str(path), n, (1, 28, 28), note="make_shapes, 28x28 grey")


def scenes_dataset(work: Path, n: int, size: int, architecture: dict[str, Any]) -> Dataset:
    """The generated RGB scenes (training/synthetic.py): a Gaussian likelihood and a deeper
    network, so a collapse in the other half of the model's settings would show too."""
    from vaeserve.training.synthetic import make_scenes

    images, counts = make_scenes(n, size=size)
    path = save_npz(work / f"scenes{size}-{n}.npz", images, counts)
    stages = "-".join(map(str, architecture["stages"]))
    return Dataset(
        f"scenes{size}",
        str(path),
        n,
        (3, size, size),
        latent_dim=SCENES_LATENT,
        architecture=dict(architecture),
        note=f"make_scenes, {size}x{size} RGB, stages {stages}, hidden "
        f"{architecture['hidden']}, {architecture['likelihood']}",
    )


def build_datasets(work: Path, mnist: Path, quick: bool) -> tuple[list[Dataset], list[str]]:
    """Write every dataset once (all seeds share the file); returns them and what was skipped."""
    if quick:
        return [
            shapes_dataset(work, QUICK_IMAGES),
            scenes_dataset(work, QUICK_IMAGES, 32, QUICK_SCENES_ARCH),
        ], []
    datasets: list[Dataset] = []
    skipped: list[str] = []
    if mnist.is_file():
        datasets += mnist_datasets(mnist, work)
    else:
        skipped.append(f"no MNIST file at {mnist}: skipping mnist, mnist-inverted, mnist-rotated")
        say(skipped[-1])
    datasets.append(shapes_dataset(work, SHAPES_IMAGES))
    datasets.append(scenes_dataset(work, SCENES_IMAGES, 64, SCENES_ARCH))
    return datasets, skipped


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Task:
    """One training run, picklable for a worker process."""

    dataset: Dataset
    seed: int
    epochs: int
    out_dir: str


def is_collapsed(metrics: dict[str, Any]) -> bool:
    """The benchmark's rule: training flagged it, or the final epoch has no active unit."""
    history = metrics.get("history") or [{}]
    return bool(metrics.get("collapsed")) or history[-1].get("active_units") == 0


def run_one(task: Task) -> dict[str, Any]:
    """Train one run in this (worker) process with one torch thread; its benchmark row."""
    from vaeserve.training.config import TrainConfig
    from vaeserve.training.train import train

    ds = task.dataset
    cfg = TrainConfig(
        data=ds.path,
        epochs=task.epochs,
        seed=task.seed,
        val_fraction=VAL_FRACTION,
        num_threads=1,
    )
    started = time.perf_counter()
    metrics = train(
        cfg,
        Path(task.out_dir),
        latent_dim=ds.latent_dim,
        architecture=ds.architecture,
        progress=False,
    )
    last = metrics["history"][-1]
    return {
        "dataset": ds.name,
        "seed": task.seed,
        "images": ds.images,
        "validation_images": metrics["validation_images"],
        "epochs": metrics["epochs"],
        "latent_dim": ds.latent_dim,
        "val_nelbo": last["val_nelbo"],
        "val_recon": last["val_recon"],
        "val_kl": last["val_kl"],
        "active_units": last["active_units"],
        "kl_per_dim": last["kl_per_dim"],
        "collapsed": is_collapsed(metrics),
        "collapsed_epoch": metrics["collapsed_epoch"],
        "active_by_epoch": [row["active_units"] for row in metrics["history"]],
        "train_seconds": metrics["train_seconds"],
        "seconds": time.perf_counter() - started,
        "out_dir": task.out_dir,
    }


def failed_row(task: Task, exc: BaseException) -> dict[str, Any]:
    """A run that raised: kept in the results, and it fails the benchmark."""
    return {
        "dataset": task.dataset.name,
        "seed": task.seed,
        "images": task.dataset.images,
        "epochs": 0,
        "collapsed": False,
        "error": f"{type(exc).__name__}: {exc}",
        "out_dir": task.out_dir,
    }


def run_line(row: dict[str, Any]) -> str:
    """The progress line of one finished run."""
    if "error" in row:
        return f"{row['dataset']:<15} seed {row['seed']:>2}  FAILED: {row['error']}"
    return (
        f"{row['dataset']:<15} seed {row['seed']:>2}  val NELBO {row['val_nelbo']:9.2f}  "
        f"KL {row['val_kl']:7.2f}  active {row['active_units']}/{row['latent_dim']}  "
        f"collapsed {'YES' if row['collapsed'] else 'no '}  {row['seconds']:6.1f} s"
    )


def run_all(tasks: list[Task], jobs: int) -> list[dict[str, Any]]:
    """Every task in `jobs` spawned worker processes (a fresh torch in each, no forked
    threads), printing each run as it finishes; rows back in task order."""
    rows: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_one, task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                rows[i] = future.result()
            except Exception as exc:  # a crashed run is a result too
                rows[i] = failed_row(tasks[i], exc)
            say(run_line(rows[i]))
    return [rows[i] for i in range(len(tasks))]


# --------------------------------------------------------------------------- summary


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dataset: runs, collapses, and the spread of the final validation NELBO across seeds
    (std is the sample standard deviation, ddof 1)."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == name]
        done = [r for r in mine if "error" not in r]
        nelbo = [r["val_nelbo"] for r in done]
        kl = [r["val_kl"] for r in done]
        out[name] = {
            "runs": len(mine),
            "finished": len(done),
            "failed": len(mine) - len(done),
            "collapsed": sum(bool(r["collapsed"]) for r in mine),
            "seeds": sorted(r["seed"] for r in mine),
            "images": max(r["images"] for r in mine),
            "epochs": sorted({r["epochs"] for r in done}),
            "latent_dim": done[0]["latent_dim"] if done else None,
            "val_nelbo_mean": statistics.fmean(nelbo) if nelbo else None,
            "val_nelbo_std": statistics.stdev(nelbo) if len(nelbo) > 1 else 0.0 if nelbo else None,
            "val_nelbo_min": min(nelbo) if nelbo else None,
            "val_nelbo_max": max(nelbo) if nelbo else None,
            "val_nelbo_range": max(nelbo) - min(nelbo) if nelbo else None,
            "val_kl_min": min(kl) if kl else None,
            "val_kl_max": max(kl) if kl else None,
            "active_units_min": min(r["active_units"] for r in done) if done else None,
            "seconds_per_run": statistics.fmean(r["seconds"] for r in done) if done else None,
        }
    return out


def verdict(
    rows: list[dict[str, Any]],
    *,
    min_datasets: int = MIN_DATASETS,
    min_seeds: int = MIN_SEEDS,
    max_images: int = MAX_IMAGES,
    epochs: int = EPOCHS,
) -> dict[str, Any]:
    """The issue's acceptance, check by check. `healthy` (no collapse, no failed run) alone sets
    the exit status; `met` needs the coverage too (datasets, seeds, images, epochs)."""
    summary = summarize(rows)
    collapsed = sum(bool(r["collapsed"]) for r in rows)
    failed = sum("error" in r for r in rows)
    covered = [n for n, s in summary.items() if s["finished"] >= min_seeds]
    checks = {
        "zero_collapses": collapsed == 0,
        "no_failed_runs": failed == 0,
        f"at_least_{min_datasets}_datasets_with_{min_seeds}_seeds": len(covered) >= min_datasets,
        f"at_most_{max_images}_images": bool(rows) and max(r["images"] for r in rows) <= max_images,
        f"{epochs}_epochs": bool(rows)
        and all(r["epochs"] == epochs for r in rows if "error" not in r),
    }
    healthy = checks["zero_collapses"] and checks["no_failed_runs"]
    return {
        "checks": checks,
        "collapsed_runs": collapsed,
        "failed_runs": failed,
        "runs": len(rows),
        "datasets_with_enough_seeds": covered,
        "healthy": healthy,
        "met": healthy and all(checks.values()),
    }


def exit_status(result: dict[str, Any]) -> int:
    """1 when any run collapsed or failed, else 0 (coverage does not change it)."""
    return 0 if result["healthy"] else 1


def verdict_line(result: dict[str, Any], skipped: Sequence[str] = ()) -> str:
    """One line saying whether the acceptance is met, and if not, which checks are not."""
    missed = [name for name, ok in result["checks"].items() if not ok]
    head = (
        f"verdict: {'MET' if result['met'] else 'NOT MET'}: {result['collapsed_runs']} collapsed "
        f"of {result['runs']} runs, {result['failed_runs']} failed; "
        f"{len(result['datasets_with_enough_seeds'])} datasets with >= {MIN_SEEDS} seeds"
    )
    if missed:
        head += "; not met: " + ", ".join(missed)
    if skipped:
        head += " (" + "; ".join(skipped) + ")"
    return head


def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


TABLE_HEADER = (
    "dataset",
    "runs",
    "collapsed",
    "val NELBO mean",
    "std",
    "min",
    "max",
    "max-min",
    "KL min",
    "KL max",
    "active min",
    "s/run",
)


def table_rows(summary: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """The table's cells, shared by the console and the Markdown versions."""
    return [
        (
            name,
            str(s["runs"]) + (f" ({s['failed']} failed)" if s["failed"] else ""),
            str(s["collapsed"]),
            _f(s["val_nelbo_mean"]),
            _f(s["val_nelbo_std"]),
            _f(s["val_nelbo_min"]),
            _f(s["val_nelbo_max"]),
            _f(s["val_nelbo_range"]),
            _f(s["val_kl_min"]),
            _f(s["val_kl_max"]),
            "–" if s["active_units_min"] is None else f"{s['active_units_min']}/{s['latent_dim']}",
            _f(s["seconds_per_run"], "{:.0f}"),
        )
        for name, s in summary.items()
    ]


def console_table(summary: dict[str, dict[str, Any]]) -> str:
    """Fixed-width columns for the terminal or a log."""
    cells = [TABLE_HEADER, *table_rows(summary)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_HEADER))]

    def line(row: tuple[str, ...]) -> str:
        padded = [c.rjust(w) for c, w in zip(row, widths, strict=True)]
        padded[0] = row[0].ljust(widths[0])  # names left, figures right
        return "  ".join(padded)

    lines = [line(row) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(summary: dict[str, dict[str, Any]]) -> str:
    header = TABLE_HEADER
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- | " + " | ".join("---:" for _ in header[1:]) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(summary)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- outputs


def machine() -> dict[str, Any]:
    """Where the figures came from (the NELBOs do not depend on it; the seconds do)."""
    import torch

    from vaeserve import __version__

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "vaeserve": __version__,
        "platform": platform.platform(),
    }


def plot(results: dict[str, Any], path: Path) -> Path:
    """Validation NELBO of every seed, one panel per dataset (their scales differ: nats of a
    28x28 Bernoulli image against a 64x64 RGB Gaussian one); collapsed runs in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["summary"])
    fig, axes = plt.subplots(
        1, max(len(names), 1), figsize=(2.4 * max(len(names), 1) + 1, 4), dpi=110, squeeze=False
    )
    jitter = np.random.default_rng(0)
    for ax, name in zip(axes[0], names, strict=False):
        rows = [r for r in results["runs"] if r["dataset"] == name and "error" not in r]
        x = jitter.uniform(-0.15, 0.15, size=len(rows))
        y = [r["val_nelbo"] for r in rows]
        colors = ["#d62728" if r["collapsed"] else "#1f77b4" for r in rows]
        ax.scatter(x, y, c=colors, s=22, alpha=0.8, edgecolors="none")
        if y:
            ax.axhline(statistics.fmean(y), color="#555555", lw=0.8, ls="--")
        s = results["summary"][name]
        ax.set_title(f"{name}\n{s['collapsed']}/{s['runs']} collapsed", fontsize=9)
        ax.set_xlim(-0.5, 0.5)
        ax.set_xticks([])
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("final validation NELBO (nats per image)")
    fig.suptitle(
        f"{plural(results['epochs'], 'epoch')} per run; red: collapsed; dashed: mean", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def docs_block(results: dict[str, Any], png: Path, doc: Path) -> str:
    """The docs/training.md block between the markers: command, table, verdict, date, plot."""
    m = results["machine"]
    datasets = "; ".join(
        f"`{d['name']}`: {d['images']:,} images, {d['note']}" for d in results["datasets"]
    )
    lines = [
        BEGIN,
        f"Made by `{results['command']}` (`make bench-training`), "
        f"{results['date']}, {results['seconds'] / 60:.0f} min on {m['cpu']} "
        f"({m['cores']} cores, {results['jobs']} runs at a time, one torch thread each); "
        f"torch {m['torch']}, vaeserve {m['vaeserve']}.",
        "",
        f"Seeds {format_seeds(results['seeds'])}, {plural(results['epochs'], 'epoch')}, "
        "every other setting the default (batch 32, lr 0.001, KL warm-up 5 epochs, validation "
        f"fraction {VAL_FRACTION}). Datasets: {datasets}. Latent 2 and the book's network for "
        f"the 28×28 sets, latent {SCENES_LATENT} for the scenes. A run counts as collapsed "
        "when training flagged it or its final epoch has no active unit. NELBO in nats per "
        "image on each run's validation split (std: sample standard deviation across seeds).",
        "",
        markdown_table(results["summary"]),
        "",
        f"**{results['verdict_line']}**",
        "",
        "Every run's row (KL per dimension, active units by epoch, seconds): "
        f"`benchmarks/results/{JSON_NAME}`.",
        "",
        f"![val NELBO per seed]({os.path.relpath(png, doc.parent)})",
        END,
    ]
    return "\n".join(wrap(line) for line in lines)


def wrap(paragraph: str, width: int = 100) -> str:
    """docs/ is wrapped at 100 columns; tables, images and markers stay one line each."""
    if paragraph.startswith(("|", "!", "<!--")) or len(paragraph) <= width:
        return paragraph
    return textwrap.fill(paragraph, width, break_long_words=False, break_on_hyphens=False)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def write_doc(doc: Path, block: str) -> None:
    """Replace only what lies between the markers; without them, add the section just before
    the collapse write-up (or at the end)."""
    text = doc.read_text() if doc.exists() else ""
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    elif NEXT_SECTION in text:
        head, tail = text.split(NEXT_SECTION, 1)
        text = head + f"{SECTION}\n\n{block}\n\n" + NEXT_SECTION + tail
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    doc.write_text(text)


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- command line


def parse_seeds(text: str) -> list[int]:
    """'0-9', '0,3,5' or '0-2,7' to a sorted list of distinct seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                seeds.update(range(int(lo), int(hi) + 1))
            elif part:
                seeds.add(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad seeds {text!r}: use e.g. 0-9 or 0,3,5") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return sorted(seeds)


def format_seeds(seeds: Iterable[int]) -> str:
    s = sorted(seeds)
    if s and s == list(range(s[0], s[-1] + 1)) and len(s) > 2:
        return f"{s[0]}–{s[-1]}"
    return ", ".join(map(str, s))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.training_robustness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mnist", type=Path, default=Path(DEFAULT_MNIST), help="IDX images")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-training"),
                        help="datasets, run folders and a copy of the results")  # fmt: skip
    parser.add_argument("--seeds", type=parse_seeds, default=None, help="e.g. 0-9 (default)")
    parser.add_argument("--epochs", type=int, default=None, help=f"default {EPOCHS}")
    parser.add_argument(
        "--datasets",
        default=None,
        help="comma-separated names to run (default all), e.g. scenes64; a partial run writes "
        "nothing into docs or results",
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (worker processes)")
    parser.add_argument("--no-docs", action="store_true",
                        help="write neither docs/training.md nor benchmarks/results")  # fmt: skip
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"2 seeds, 1 epoch, {QUICK_IMAGES} images, synthetic sets only; implies --no-docs",
    )
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else list(range(10))
    if args.epochs is None:
        args.epochs = 1 if args.quick else EPOCHS
    if args.epochs < 1 or args.jobs < 1:
        parser.error("--epochs and --jobs must be >= 1")
    args.no_docs = args.no_docs or args.quick or args.datasets is not None
    return args


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", "benchmarks.training_robustness", *args])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    datasets, skipped = build_datasets(work / "data", args.mnist, args.quick)
    if args.datasets is not None:
        wanted = set(args.datasets.split(","))
        unknown = wanted - {d.name for d in datasets}
        if unknown:
            say(f"unknown datasets {', '.join(sorted(unknown))[:200]}")
            return 2
        datasets = [d for d in datasets if d.name in wanted]
    runs_dir = work / "runs"  # one folder per run, replaced by the next benchmark
    tasks = [
        Task(ds, seed, args.epochs, str(runs_dir / f"{ds.name}-seed{seed}"))
        for ds in datasets
        for seed in args.seeds
    ]
    say(
        f"{len(tasks)} runs: {', '.join(d.name for d in datasets)} x seeds "
        f"{format_seeds(args.seeds)}, {plural(args.epochs, 'epoch')}, {args.jobs} at a time, "
        f"in {runs_dir}"
    )
    rows = run_all(tasks, args.jobs)
    result = verdict(rows)
    results: dict[str, Any] = {
        "command": command_line(argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "seconds": time.perf_counter() - started,
        "quick": args.quick,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "jobs": args.jobs,
        "datasets": [asdict(d) for d in datasets],
        "skipped": skipped,
        "summary": summarize(rows),
        "verdict": result,
        "verdict_line": verdict_line(result, skipped),
        "runs": rows,
    }
    say("")
    say(console_table(results["summary"]))
    say(results["verdict_line"])
    write_json(results, work / JSON_NAME)
    plot(results, work / PNG_NAME)
    if not args.no_docs:
        png = plot(results, RESULTS / PNG_NAME)
        say(f"wrote {write_json(results, RESULTS / JSON_NAME)} and {png}")
        write_doc(DOC, docs_block(results, png, DOC))
        say(f"wrote {DOC}'s bench-training block")
    else:
        say(f"wrote {work / JSON_NAME} and {work / PNG_NAME} (docs and results untouched)")
    return exit_status(result)


if __name__ == "__main__":
    sys.exit(main())
