"""The client subcommands about latent space (extra: serve): `interpolate`, `edit`,
`latent-map` and `sample`, each writing one PNG from a running server's answers."""

from __future__ import annotations

import argparse
import json

from vaeserve.cli.client import client_flags, connect, picture_flags, save_picture
from vaeserve.cli.errors import UsageError, needs_extra


def _interpolate(args: argparse.Namespace) -> int:
    with needs_extra("serve", "interpolate"), connect(args) as client:
        import numpy as np

        from vaeserve.service.client.inputs import read_image

        shape = client.model_info().image_shape

        def end(latent: list[float] | None, image: str | None) -> np.ndarray:
            if latent is not None:
                return np.asarray(latent, dtype=np.float32)
            return read_image(str(image), shape)

        start, stop = end(args.from_latent, args.from_image), end(args.to_latent, args.to_image)
        path = client.interpolate(start, stop, args.steps, method=args.method, format="uint8")
        summary = save_picture(path.images, args.out, args.steps, args.scale)
    print(json.dumps({**summary, "method": args.method, "latents": path.latents.tolist()}))
    return 0


def _edit(args: argparse.Namespace) -> int:
    with needs_extra("serve", "edit"), connect(args) as client:
        import numpy as np

        from vaeserve.service.client.inputs import read_image

        shape = client.model_info().image_shape
        images = np.concatenate([read_image(spec, shape) for spec in args.image])
        alphas = list(args.alphas)
        edited = client.edit(images, args.concept, alphas, format="uint8")
        summary = save_picture(edited.images, args.out, len(alphas), args.scale)
    print(json.dumps({**summary, "concept": args.concept, "alphas": alphas}))
    return 0


def _latent_map(args: argparse.Namespace) -> int:
    with needs_extra("serve", "latent-map"), connect(args) as client:
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
    with needs_extra("serve", "sample"), connect(args) as client:
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
        summary = save_picture(np.concatenate(rows), args.out, args.n, args.scale)
    print(json.dumps({**summary, "concepts": concepts, "seed": args.seed}))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add interpolate, edit, latent-map and sample to the `vaeserve` parser's subcommands."""
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
    picture_flags(p)
    client_flags(p)
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
    picture_flags(p)
    client_flags(p)
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
    picture_flags(p)
    client_flags(p)
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
    picture_flags(p)
    client_flags(p)
    p.set_defaults(func=_sample)
