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

from vaeserve import __version__

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
    parser = argparse.ArgumentParser(prog="vaeserve", description=__doc__.split("\n")[0])
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
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (UsageError, ValueError, FileNotFoundError) as exc:
        # Bad input (DatasetError, CheckpointError and DeviceUnavailable are ValueErrors):
        # one line that says what was wrong; bugs still raise with their traceback.
        print(f"vaeserve {args.command}: error: {exc}", file=sys.stderr)
        return 2
