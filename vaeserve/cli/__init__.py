"""The `vaeserve` command. Each subcommand imports its extra's packages only when it runs, so
`vaeserve --help` works anywhere and a missing extra gets a one-line hint, not a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from vaeserve import __version__

if TYPE_CHECKING:
    from vaeserve.service.client import VaeClient
    from vaeserve.service.config import Settings

# Top-level modules each extra provides; a ModuleNotFoundError for one of them means "install it".
EXTRA_MODULES = {
    "train": {"torch", "onnx", "onnxscript", "matplotlib"},
    "serve": {
        "onnxruntime",
        "grpc",
        "grpc_health",
        "grpc_reflection",
        "google",
        "prometheus_client",
        "pydantic_settings",
        "pydantic",
    },
}


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


@contextmanager
def needs_extra(extra: str, command: str) -> Iterator[None]:
    try:
        yield
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in EXTRA_MODULES[extra]:
            raise
        raise UsageError(
            f"'vaeserve {command}' needs the '{extra}' extra (module '{root}' is not installed): "
            f"pip install 'vaeserve[{extra}]'"
        ) from None


def _train(args: argparse.Namespace) -> int:
    with needs_extra("train", "train"):
        from vaeserve.training.config import TrainConfig
        from vaeserve.training.train import train

        if args.data is None and not args.resume:
            raise UsageError("--data is required (unless --resume continues a run)")
        cfg = TrainConfig(
            data=str(args.data or ""),
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            beta=args.beta,
            kl_warmup_epochs=args.kl_warmup,
            seed=args.seed,
            val_fraction=args.val_fraction,
            limit=args.limit,
            device=args.device,
            num_threads=args.threads,
        )
        height, width = args.image_size or (None, None)
        metrics = train(
            cfg,
            args.out,
            latent_dim=args.latent_dim,
            channels=args.channels,
            height=height,
            width=width,
            resume=args.resume,
            progress=not args.quiet,
        )
    print(json.dumps({"out": str(args.out), **metrics["final"]}, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    with needs_extra("train", "evaluate"):
        from vaeserve.training.evaluate import evaluate

        result = evaluate(
            args.checkpoint,
            args.data,
            split=args.split,
            iw_samples=args.iw_samples,
            seed=args.seed,
            progress=not args.quiet,
        )
    print(json.dumps(result, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    with needs_extra("train", "export"):
        from vaeserve.export.onnx_export import export_model

        sizes = tuple(int(b) for b in args.batch_sizes.split(","))
        result = export_model(
            args.checkpoint,
            args.repository,
            args.name,
            args.version,
            batch_sizes=sizes,
            tolerance=args.tolerance,
            optimize=args.optimize,
            fp16=args.fp16,
            data=args.data,
            command=args.command_note,
            force=args.force,
        )
    meta = result.meta
    summary = {
        "directory": str(result.directory),
        "encoder_max_abs_diff": meta["parity"]["encoder_max_abs_diff"],
        "decoder_max_abs_diff": meta["parity"]["decoder_max_abs_diff"],
        "metrics": meta["metrics"],
        "variants": sorted(meta["variants"]),
    }
    print(json.dumps(summary, indent=2))
    return 0


def serve_flags() -> dict[str, tuple[type | None, str]]:
    """`vaeserve serve` flags, one per Settings field, derived from the field (its type, and its
    docstring with the default and variable named), so a new setting needs no edit here.
    Defaults are None: a flag left out falls through to VAESERVE_* and then the default."""
    from vaeserve.service.config import Settings

    flags: dict[str, tuple[type | None, str]] = {}
    for name, field in Settings.model_fields.items():
        text = " ".join((field.description or "").split())
        first = text.split(". ")[0].rstrip(".")
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
        one_of = f"; one of {', '.join(map(str, choices))}" if choices else ""
        default = "unset" if field.default is None else field.default
        help_text = f"{first}{one_of} (default {default}; env VAESERVE_{name.upper()})"
        flags[name] = (_flag_type(field.annotation), help_text.replace("%", "%%"))
    return flags


def _flag_type(annotation: Any) -> type | None:
    """argparse type of a field: None for a switch (--x / --no-x), else int, float, Path or str
    (Literals too: the model's validators fold case, so argparse does not check choices)."""
    args = get_args(annotation)
    if type(None) in args:  # X | None
        annotation = next(a for a in args if a is not type(None))
    if annotation is bool:
        return None
    return annotation if annotation in (int, float, Path) else str


def __getattr__(name: str) -> Any:
    if name == "SERVE_FLAGS":  # derived on use: pydantic is imported only by what needs it
        return serve_flags()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The server's settings: the flags given, over VAESERVE_* variables, over the defaults."""
    from vaeserve.service.config import Settings

    given = {name: getattr(args, f"serve_{name}") for name in serve_flags()}
    return Settings(**{k: v for k, v in given.items() if v is not None})


def _serve(args: argparse.Namespace) -> int:
    with needs_extra("serve", "serve"):
        import asyncio

        from pydantic import ValidationError

        from vaeserve.service.errors import StartupError
        from vaeserve.service.grpc.server import serve

        try:
            settings = settings_from_args(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in exc.errors()
            )
            raise UsageError(f"bad settings (flags or VAESERVE_* variables): {problems}") from None
        logging.getLogger().setLevel(settings.log_level)
        try:
            asyncio.run(serve(settings))
        except StartupError as exc:
            print(f"vaeserve serve: error: {exc}", file=sys.stderr)
            return 1
    return 0


def _generate(args: argparse.Namespace) -> int:
    with needs_extra("serve", "generate"), _client(args) as client:
        from vaeserve.service.client.generate import generate

        result = generate(
            client,
            args.out,
            args.n,
            seed=args.seed,
            temperature=args.temperature,
            grid=args.grid,
            grid_max=args.grid_max,
            chunk_size=args.chunk_size,
            progress=not args.quiet,
            concept=args.concept,
        )
    summary = {
        "out": str(result.out),
        "written": result.written,
        "skipped": result.skipped,
        "seed": result.seed,
        "contact_sheet": str(result.grid) if result.grid else None,
    }
    print(json.dumps(summary, indent=2))
    return 0


def _concepts(args: argparse.Namespace) -> int:
    with needs_extra("serve", "concepts"):
        from vaeserve.export.concepts import build_concepts

        vectors = {name: (positive, negative) for name, positive, negative in args.from_images}
        if len(vectors) != len(args.from_images):
            raise UsageError("--from-images: each NAME may be given once")
        path = build_concepts(
            args.repository / args.name / str(args.version),
            data=args.data,
            vectors=vectors,
            limit=args.limit,
            command=" ".join(["vaeserve", *args.argv]) if args.record_command else None,
        )
        document = json.loads(path.read_text())
    summary = {
        "concepts": str(path),
        "bytes": path.stat().st_size,
        "images": document.get("dataset", {}).get("images"),
        "labels": {k: v["count"] for k, v in document["labels"].items()},
        "vectors": sorted(document.get("vectors", {})),
    }
    print(json.dumps(summary, indent=2))
    return 0


@contextmanager
def _client(args: argparse.Namespace) -> Iterator[VaeClient]:
    """A VaeClient for a client subcommand; a refusal by the server becomes one line, exit 1."""
    import grpc

    from vaeserve.service.client import VaeClient

    client = VaeClient(
        args.target,
        model=args.model,
        version=args.version,
        timeout=args.timeout,
        **_client_security(args),
    )
    try:
        yield client
    except grpc.RpcError as exc:
        raise RpcFailed(f"{exc.code().name}: {exc.details()}") from None
    finally:
        client.close()


class RpcFailed(Exception):
    """The server refused a client subcommand's call, or could not be reached: exit status 1."""


def _save(images: object, out: Path, ncol: int, scale: int) -> dict[str, object]:
    """uint8 images as one PNG grid (`ncol` per row); the summary line's fields."""
    from vaeserve.imaging import save_grid

    save_grid(images, out, ncol=ncol, scale=scale)  # type: ignore[arg-type]
    return {"out": str(out), "images": len(images), "columns": ncol}  # type: ignore[arg-type]


def _interpolate(args: argparse.Namespace) -> int:
    with needs_extra("serve", "interpolate"), _client(args) as client:
        import numpy as np

        from vaeserve.service.client.inputs import read_image

        shape = client.model_info().image_shape

        def end(latent: list[float] | None, image: str | None) -> np.ndarray:
            if latent is not None:
                return np.asarray(latent, dtype=np.float32)
            return read_image(str(image), shape)

        start, stop = end(args.from_latent, args.from_image), end(args.to_latent, args.to_image)
        path = client.interpolate(start, stop, args.steps, method=args.method, format="uint8")
        summary = _save(path.images, args.out, args.steps, args.scale)
    print(json.dumps({**summary, "method": args.method, "latents": path.latents.tolist()}))
    return 0


def _edit(args: argparse.Namespace) -> int:
    with needs_extra("serve", "edit"), _client(args) as client:
        import numpy as np

        from vaeserve.service.client.inputs import read_image

        shape = client.model_info().image_shape
        images = np.concatenate([read_image(spec, shape) for spec in args.image])
        alphas = list(args.alphas)
        edited = client.edit(images, args.concept, alphas, format="uint8")
        summary = _save(edited.images, args.out, len(alphas), args.scale)
    print(json.dumps({**summary, "concept": args.concept, "alphas": alphas}))
    return 0


def _latent_map(args: argparse.Namespace) -> int:
    with needs_extra("serve", "latent-map"), _client(args) as client:
        from PIL import Image

        from vaeserve.imaging import to_pil

        (i, j), point = args.dims, args.point
        picture = to_pil(client.latent_map(dims=(i, j), grid=args.grid, point=point))
        if args.scale > 1:
            size = (picture.width * args.scale, picture.height * args.scale)
            picture = picture.resize(size, Image.Resampling.NEAREST)  # pixels stay sharp
        args.out.parent.mkdir(parents=True, exist_ok=True)
        picture.save(args.out)
    print(json.dumps({"out": str(args.out), "grid": args.grid, "dims": [i, j], "point": point}))
    return 0


def _sample(args: argparse.Namespace) -> int:
    with needs_extra("serve", "sample"), _client(args) as client:
        import numpy as np

        concepts = list(args.concept)
        if args.all_labels:
            concepts += [f"label:{label}" for label in client.list_concepts().labels]
            if not concepts:
                raise UsageError("--all-labels: the model has no concepts (no concepts.json)")
        rows = [
            client.sample(
                args.n,
                seed=args.seed,
                temperature=args.temperature,
                format="uint8",
                concept=concept,
            ).images
            for concept in concepts or [""]
        ]
        summary = _save(np.concatenate(rows), args.out, args.n, args.scale)
    print(json.dumps({**summary, "concepts": concepts, "seed": args.seed}))
    return 0


def _list_concepts(args: argparse.Namespace) -> int:
    with needs_extra("serve", "list-concepts"), _client(args) as client:
        found = client.list_concepts()
    print(
        json.dumps(
            {
                "dataset": found.dataset,
                "encoder_sha256": found.encoder_sha256,
                "labels": {k: v.count for k, v in found.labels.items()},
                "vectors": {
                    name: {"kind": v.kind, "norm": round(v.norm, 4), "description": v.description}
                    for name, v in found.vectors.items()
                },
            },
            indent=2,
        )
    )
    return 0


def _client_security(args: argparse.Namespace) -> dict[str, object]:
    """VaeClient's TLS and token arguments from `generate`'s flags (files read here)."""

    def read(path: Path | None) -> bytes | None:
        return None if path is None else path.read_bytes()

    token = read(args.token_file)
    return {
        "tls": args.tls,
        "root_certificates": read(args.root_cert),
        "client_certificate": read(args.client_cert),
        "client_key": read(args.client_key),
        "token": token.decode().strip() if token else None,
    }


def _image_size(text: str) -> tuple[int, int]:
    """`28` or `32x48` (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 2:
        raise argparse.ArgumentTypeError(f"expected N or HxW with sides >= 2, got {text!r}")
    return parts[0], parts[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaeserve",
        description="Train a convolutional VAE, export it as two ONNX graphs, serve them over "
        "gRPC on ONNX Runtime, and work with a running server (generate, latent space). "
        "`vaeserve COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"vaeserve {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a VAE on images (extra: train)",
        description="Train the convolutional VAE; writes checkpoint.pt, "
        "metrics.json and PNG pictures to --out.",
    )
    p.add_argument("--data", type=Path, help="IDX file (gz or raw), .npz, or folder of images")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        help="N or HxW; default: the data's size (folders: the first image's)",
    )
    p.add_argument("--channels", type=int, choices=[1, 3], default=None, help="default: the data's")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta", type=float, default=1.0, help="weight of the KL term")
    p.add_argument(
        "--kl-warmup", type=float, default=5.0, help="epochs of linear KL warm-up (0 turns it off)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (to --epochs)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="ELBO and IWAE bound of a checkpoint (extra: train)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", default=None, help="dataset; default: the one the run trained on")
    p.add_argument(
        "--split",
        choices=["all", "train", "val"],
        default="all",
        help="all images of --data, or the run's own train/validation split",
    )
    p.add_argument(
        "--iw-samples",
        type=int,
        default=100,
        help="K importance samples for the IWAE bound on -log p(x)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX in a model repository (extra: train)",
        description="Write REPOSITORY/NAME/VERSION/{encoder.onnx, decoder.onnx, model.json}, "
        "after onnx.checker and a parity check against PyTorch on random and real inputs.",
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--repository", type=Path, required=True, help="model repository root")
    p.add_argument("--name", required=True, help="model name (letters, digits, _ . -)")
    p.add_argument("--version", type=int, required=True, help="positive integer")
    p.add_argument("--batch-sizes", default="1,7,1024", help="parity is checked at each")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |onnxruntime - torch|")
    p.add_argument(
        "--optimize",
        action="store_true",
        help="also write ONNX Runtime-optimized copies (*.optimized.onnx)",
    )
    p.add_argument(
        "--fp16",
        action="store_true",
        help="also write float16 graphs for GPUs (encoder.fp16.onnx, decoder.fp16.onnx)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="real images for parity and metrics; default: the run's own data",
    )
    p.add_argument(
        "--command-note",
        default=None,
        help="the command that built this model, recorded in model.json",
    )
    p.add_argument("--force", action="store_true", help="replace an existing version")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "serve",
        help="serve a model repository over gRPC (extra: serve)",
        description="Serve the encoder and decoder of every model in a repository over gRPC "
        "(vaeserve.v1.VaeService) on ONNX Runtime, with health, reflection and Prometheus "
        "metrics. Each flag overrides its VAESERVE_* environment variable (e.g. --max-batch-size "
        "and VAESERVE_MAX_BATCH_SIZE). SIGTERM drains in-flight requests, then exits.",
    )
    try:
        flags = serve_flags()
    except ModuleNotFoundError:  # no serve extra: `vaeserve serve` then says which to install
        flags = {}
    for name, (kind, text) in flags.items():
        flag, dest = "--" + name.replace("_", "-"), f"serve_{name}"
        if kind is None:
            p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, help=text)
        else:
            p.add_argument(
                flag, dest=dest, type=kind, default=None, metavar=name.upper(), help=text
            )
    p.set_defaults(func=_serve)

    p = sub.add_parser(
        "generate",
        help="write N sampled images from a running server as PNG files (extra: serve)",
        description="Stream N samples from a vaeserve server into DIR/NNNNNN.png plus a "
        "contact sheet. Re-running the same command fetches only the images still missing.",
    )
    p.add_argument("--target", default="localhost:8001", help="server HOST:PORT")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="default: a random seed, recorded in DIR/generate.json",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="prior std scale")
    p.add_argument(
        "--grid", type=Path, default=None, help="contact sheet path; default DIR/contact_sheet.png"
    )
    p.add_argument(
        "--grid-max",
        type=int,
        default=1024,
        help="images on the contact sheet (the first ones); 0 = no sheet",
    )
    p.add_argument("--chunk-size", type=int, default=0, help="images per streamed message")
    p.add_argument(
        "--concept", default="", help="sample around a label, e.g. label:3 (needs concepts.json)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _client_flags(p, target=False)
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "concepts",
        help="build concepts.json for a model version with its encoder.onnx (extra: serve)",
        description="Encode a labelled dataset with the version's exported encoder (ONNX "
        "Runtime, no torch) and write per-label mean latents and covariances to "
        "REPOSITORY/NAME/VERSION/concepts.json, for the ListConcepts and Edit RPCs and for "
        "sampling around a label. --from-images adds user-defined vectors.",
    )
    p.add_argument(
        "--data",
        default=None,
        help="labelled dataset (IDX .gz with labels, .npz, or a folder of label subfolders)",
    )
    p.add_argument("--repository", type=Path, required=True, help="model repository root")
    p.add_argument("--name", required=True, help="model name")
    p.add_argument("--version", type=int, required=True, help="model version")
    p.add_argument(
        "--from-images",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "POSITIVE", "NEGATIVE"),
        help="a vector NAME = mean encoding of the POSITIVE images minus that of the NEGATIVE "
        "ones (each a dataset or folder of images); may be repeated",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of --data")
    p.add_argument(
        "--record-command",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record this command line in concepts.json (default on)",
    )
    p.set_defaults(func=_concepts)

    p = sub.add_parser(
        "interpolate",
        help="decode the path between two latents or images into one PNG strip (extra: serve)",
        description="Interpolate between two points (latents, or images encoded to their "
        "posterior means) on a running server and write the decoded path as one PNG strip.",
    )
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--from-latent", nargs="+", type=float, metavar="Z", help="start latent, e.g. -1.5 0.2"
    )
    start.add_argument(
        "--from-image", metavar="IMAGE", help="start image: FILE.png, or DATASET#INDEX"
    )
    stop = p.add_mutually_exclusive_group(required=True)
    stop.add_argument("--to-latent", nargs="+", type=float, metavar="Z", help="end latent")
    stop.add_argument("--to-image", metavar="IMAGE", help="end image: FILE.png, or DATASET#INDEX")
    p.add_argument("--steps", type=int, default=10, help="points, both ends included (>= 2)")
    p.add_argument("--method", choices=["linear", "spherical"], default="linear")
    _picture_flags(p)
    _client_flags(p)
    p.set_defaults(func=_interpolate)

    p = sub.add_parser(
        "edit",
        help="move images along a concept vector, several strengths, one PNG (extra: serve)",
        description="Encode each image, add alpha times the concept vector for each alpha, "
        "decode, and write one PNG grid: a row per image, a column per alpha.",
    )
    p.add_argument("--image", nargs="+", required=True, help="images: FILE.png, or DATASET#INDEX")
    p.add_argument("--concept", required=True, help="a name from list-concepts, e.g. label:7, 7-1")
    p.add_argument(
        "--alphas", nargs="+", type=float, default=[-2, -1, 0, 1, 2], help="strengths, e.g. -1 0 1"
    )
    _picture_flags(p)
    _client_flags(p)
    p.set_defaults(func=_edit)

    p = sub.add_parser(
        "latent-map",
        help="the decoder over a 2-D grid of latent space, as one PNG (extra: serve)",
        description="Decode a GRID x GRID grid of latents, evenly spaced in probability under "
        "the N(0, 1) prior (quantiles 0.05..0.95 through the Gaussian inverse CDF), on the "
        "slice of latent dimensions --dims (others at --point, default 0), into one PNG.",
    )
    p.add_argument(
        "--dims", nargs=2, type=int, default=[0, 1], help="the two latent dimensions, e.g. 0 1"
    )
    p.add_argument("--grid", type=int, default=20, help="cells per side")
    p.add_argument(
        "--point",
        nargs="+",
        type=float,
        default=None,
        help="a latent (all L values) giving the other dimensions' values; default all 0",
    )
    _picture_flags(p)
    _client_flags(p)
    p.set_defaults(func=_latent_map)

    p = sub.add_parser(
        "sample",
        help="sample images (from the prior or around labels) into one PNG (extra: serve)",
        description="Sample N images per row: from the prior, or with --concept label:K from "
        "the Gaussian fitted to where the encoder puts label K (one row per --concept).",
    )
    p.add_argument("--n", type=int, default=10, help="images per row")
    p.add_argument(
        "--concept", action="append", default=[], help="label:K; may be repeated (a row each)"
    )
    p.add_argument("--all-labels", action="store_true", help="a row for every label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0, help="spread scale")
    _picture_flags(p)
    _client_flags(p)
    p.set_defaults(func=_sample)

    p = sub.add_parser(
        "list-concepts",
        help="the concept vectors and labels a model serves, as JSON (extra: serve)",
    )
    _client_flags(p)
    p.set_defaults(func=_list_concepts)
    return parser


def _picture_flags(p: argparse.ArgumentParser) -> None:
    """--out and --scale of the subcommands that write one picture."""
    p.add_argument("--out", type=Path, required=True, help="PNG file")
    p.add_argument("--scale", type=int, default=1, help="enlarge the picture this many times")


def _client_flags(p: argparse.ArgumentParser, *, target: bool = True) -> None:
    """Flags every client subcommand shares: server, model, deadline, TLS and token."""
    if target:
        p.add_argument("--target", default="localhost:8001", help="server HOST:PORT")
    p.add_argument("--model", default="", help="model name; default: the server's default")
    p.add_argument("--version", type=int, default=0, help="model version; 0 = highest")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each unary call, s")
    p.add_argument("--tls", action="store_true", help="TLS, verified by the system's roots")
    p.add_argument("--root-cert", type=Path, default=None, help="PEM CA to verify the server by")
    p.add_argument("--client-cert", type=Path, default=None, help="PEM client cert (mutual TLS)")
    p.add_argument("--client-key", type=Path, default=None, help="PEM key of --client-cert")
    p.add_argument("--token-file", type=Path, default=None, help="file with the bearer token")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except RpcFailed as exc:
        print(f"vaeserve {args.command}: {exc}", file=sys.stderr)
        return 1
    except (UsageError, ValueError, FileNotFoundError) as exc:
        # Bad input (DatasetError, CheckpointError and DeviceUnavailable are ValueErrors):
        # one line that says what was wrong; bugs still raise with their traceback.
        print(f"vaeserve {args.command}: error: {exc}", file=sys.stderr)
        return 2
