"""`vaeserve concepts` (extra: serve): concepts.json for a model version, built with its
exported encoder on ONNX Runtime (no torch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaeserve.cli.errors import UsageError, needs_extra


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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add concepts to the `vaeserve` parser's subcommands."""
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
