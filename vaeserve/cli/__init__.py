"""The `vaeserve` command: `build_parser` asks each group of subcommands to add itself, and
`main` is the one error boundary.

Modules: `train` (train, evaluate, export), `serve` (serve; its flags derived from Settings),
`concepts`, `client` (the client subcommands' plumbing, generate, list-concepts), `latent`
(interpolate, edit, latent-map, sample), `errors` (UsageError, needs_extra). Each subcommand
imports its extra's packages only when it runs, so `vaeserve --help` works anywhere and a
missing extra gets a one-line hint, not a traceback.

Errors: a `vaeserve.errors.UserError` (bad input, a refused call, a server that cannot start)
is printed as one line, `vaeserve CMD: error: ...`, and exits with its `exit_status` (2, or 1
for RpcFailed and StartupError); `--debug` adds its traceback. Anything else is a bug and
propagates with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from vaeserve import __version__
from vaeserve.cli import client, concepts, latent, serve, train
from vaeserve.cli.client import RpcFailed
from vaeserve.cli.errors import EXTRA_MODULES, UsageError, needs_extra
from vaeserve.cli.serve import serve_flags, settings_from_args
from vaeserve.errors import UserError

__all__ = [
    "EXTRA_MODULES",
    "SERVE_FLAGS",
    "RpcFailed",
    "UsageError",
    "UserError",
    "build_parser",
    "main",
    "needs_extra",
    "serve_flags",
    "settings_from_args",
]


def __getattr__(name: str) -> Any:
    if name == "SERVE_FLAGS":  # derived on use: only what needs it imports pydantic
        return serve_flags()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, print its traceback too, not only the one line saying what was wrong",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train.add_parsers(sub)
    serve.add_parser(sub)
    concepts.add_parser(sub)
    client.add_parsers(sub)
    latent.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_unknown_args", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as exc:  # the user's to fix: one line; anything else is a bug
        if args.debug:
            traceback.print_exception(exc)
        print(f"vaeserve {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_status
