"""`vaeserve train`, `evaluate` and `export` (extra: train): training a VAE, scoring a
checkpoint, and exporting it to ONNX in a model repository."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaeserve.cli.errors import needs_extra


def _train(args: argparse.Namespace) -> int:
    with needs_extra("train", "train"):
        from vaeserve.training.config import TrainConfig
        from vaeserve.training.train import train

        cfg = TrainConfig(
            data=str(args.data or ""),
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            lr_schedule=args.lr_schedule,
            optimizer=args.optimizer,
            lr_warmup_steps=args.lr_warmup,
            beta=args.beta,
            kl_warmup_epochs=args.kl_warmup,
            kl_cycles=args.kl_cycles,
            free_bits=args.free_bits,
            fail_on_collapse=args.fail_on_collapse,
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
            architecture={
                k: v
                for k, v in {
                    "stem": args.stem,
                    "stages": args.stages,
                    "hidden": args.hidden,
                    "likelihood": args.likelihood,
                }.items()
                if v is not None
            },
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

        result = export_model(
            args.checkpoint,
            args.repository,
            args.name,
            args.version,
            batch_sizes=args.batch_sizes,
            tolerance=args.tolerance,
            optimize=args.optimize,
            fp16=args.fp16,
            data=args.data,
            command=args.command_note,
            force=args.force,
            allow_collapsed=args.allow_collapsed,
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


def _stages(text: str) -> tuple[int, ...]:
    """`32,64,128`: the channels of each stride-2 stage (ModelConfig checks the values)."""
    try:
        stages = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated channel counts such as 32,64,128, got {text[:40]!r}"
        ) from None
    return stages


def _batch_sizes(text: str) -> tuple[int, ...]:
    """`1,7,1024`: the batch sizes export checks parity at."""
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add train, evaluate and export to the `vaeserve` parser's subcommands."""
    p = sub.add_parser(
        "train",
        help="train a VAE on images (extra: train)",
        description="Train the convolutional VAE; writes checkpoint.pt, "
        "metrics.json and PNG pictures to --out.",
    )
    # One of the two, so --help shows --data as required: a resumed run reads its data's path
    # from the checkpoint.
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="IDX file (gz or raw), .npz, or folder of images")
    source.add_argument(
        "--resume",
        action="store_true",
        help="instead of --data: continue the run in --out from its checkpoint (to --epochs)",
    )
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        help="N or HxW; default: the data's size (folders: the first image's)",
    )
    p.add_argument("--channels", type=int, choices=[1, 3], default=None, help="default: the data's")
    p.add_argument(
        "--stages",
        type=_stages,
        default=None,
        metavar="C1,C2,...",
        help="channels of each stride-2 stage (default 64: the book's network); e.g. 32,64,128 "
        "for 64x64 images, 32,64,128,256 for 128x128",
    )
    p.add_argument(
        "--stem", type=int, default=None, help="channels of the first convolution (default 32)"
    )
    p.add_argument(
        "--hidden", type=int, default=None, help="width of the Dense layer before z (default 32)"
    )
    p.add_argument(
        "--likelihood",
        choices=["bernoulli", "gaussian"],
        default=None,
        help="p(x|z): bernoulli (default; near-binary images such as MNIST) or gaussian with "
        "each batch's optimal scale per channel (natural images)",
    )
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=["adam", "radam"], default="adam", help="default adam")
    p.add_argument(
        "--lr-warmup",
        type=int,
        default=100,
        metavar="STEPS",
        help="linear learning-rate warm-up over the first STEPS optimiser steps, so Adam's first "
        "steps do not switch off the ReLUs in front of z (default 100; 0: off)",
    )
    p.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        default="constant",
        help="constant, or cosine: from --lr down to 0 over the run (default constant)",
    )
    p.add_argument("--beta", type=float, default=1.0, help="weight of the KL term")
    p.add_argument(
        "--kl-warmup", type=float, default=5.0, help="epochs of linear KL warm-up (0 turns it off)"
    )
    p.add_argument(
        "--kl-cycles",
        type=int,
        default=0,
        metavar="M",
        help="cyclical KL annealing (Fu et al. 2019): M cycles over the run, each ramping the KL "
        "weight 0 -> beta over its first half; replaces --kl-warmup (default 0: off)",
    )
    p.add_argument(
        "--free-bits",
        type=float,
        default=0.0,
        metavar="LAMBDA",
        help="free bits (Kingma et al. 2016): floor of LAMBDA nats on each latent dimension's "
        "batch-mean KL in the training loss; reported NELBOs stay true (default 0: off)",
    )
    p.add_argument(
        "--fail-on-collapse",
        action="store_true",
        help="stop with an error (checkpoint and metrics written) when no latent unit is "
        "active for 2 epochs in a row (posterior collapse)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress (a bar on a terminal; otherwise a line every 30 s in long epochs)",
    )
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
    p.add_argument(
        "--batch-sizes", type=_batch_sizes, default="1,7,1024", help="parity is checked at each"
    )
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
    p.add_argument(
        "--allow-collapsed",
        action="store_true",
        help="export even a checkpoint whose run had posterior collapse (no active latent unit)",
    )
    p.set_defaults(func=_export)
