"""`vaeserve serve` (extra: serve). Its flags are derived from the fields of
`vaeserve.service.config.Settings`: one flag per field, typed by the field's annotation, its help
the field's docstring, so a new server setting needs its field and nothing here."""

from __future__ import annotations

import argparse
import logging
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from vaeserve.cli.errors import UsageError, missing_extra, needs_extra

if TYPE_CHECKING:
    from vaeserve.service.config import Settings

DESCRIPTION = (
    "Serve the encoder and decoder of every model in a repository over gRPC "
    "(vaeserve.v1.VaeService) on ONNX Runtime, with health, reflection and Prometheus metrics. "
    "Each flag overrides its VAESERVE_* environment variable (e.g. --max-batch-size and "
    "VAESERVE_MAX_BATCH_SIZE), which overrides the default. SIGTERM drains in-flight requests, "
    "then exits; with --workers N, N processes share the port behind one /metrics."
)


def serve_flags() -> dict[str, tuple[type | None, str]]:
    """`vaeserve serve`'s flags, one per Settings field: name -> (argparse type, or None for a
    switch `--x` / `--no-x`; help text). Defaults are None, so a flag left out falls through to
    VAESERVE_* and then the field's default (see settings_from_args). Names, docstrings and
    defaults are shown as the docs table shows them (service/settings_doc.py)."""
    from vaeserve.service.config import Settings
    from vaeserve.service.settings_doc import description, env_name, shown_default

    flags: dict[str, tuple[type | None, str]] = {}
    for name, field in Settings.model_fields.items():
        kind, choices = _flag_type(name, field.annotation)
        notes = [f"one of {', '.join(choices)}"] if choices else []
        notes += [f"default: {shown_default(name)}", f"env {env_name(name)}"]
        flags[name] = (kind, f"{description(name)} ({'; '.join(notes)})".replace("%", "%%"))
    return flags


def _flag_type(name: str, annotation: Any) -> tuple[type | None, tuple[str, ...]]:
    """A field's argparse type (None: a switch) and, for a Literal, its values. A Literal is
    parsed as str, not with `choices`: the model's validators fold case (`--log-level debug`)."""
    args = get_args(annotation)
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:  # X | None
            annotation, args = rest[0], get_args(rest[0])
    if annotation is bool:
        return None, ()
    if get_origin(annotation) is Literal:
        return str, tuple(str(a) for a in args)
    if annotation in (int, float, str, Path):
        return annotation, ()
    raise TypeError(f"Settings.{name}: no `vaeserve serve` flag for a {annotation!r} field")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The server's settings: the flags given, over VAESERVE_* variables, over the defaults."""
    from vaeserve.service.config import Settings

    given = {name: getattr(args, f"serve_{name}") for name in serve_flags()}
    return Settings(**{k: v for k, v in given.items() if v is not None})


def _serve(args: argparse.Namespace) -> int:
    with needs_extra("serve", "serve"):
        import asyncio

        from pydantic import ValidationError

        try:
            settings = settings_from_args(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in exc.errors()
            )
            raise UsageError(f"bad settings (flags or VAESERVE_* variables): {problems}") from None
        folder = settings.port_file.parent if settings.port_file else None
        if folder is not None and not folder.is_dir():
            raise UsageError(f"port_file {settings.port_file}: no folder {folder}")
        logging.getLogger().setLevel(settings.log_level)
        if settings.workers > 1:  # the parent loads neither grpc nor ONNX Runtime
            from vaeserve.service.workers import run_workers

            return run_workers(settings)
        from vaeserve.service.grpc.server import serve

        asyncio.run(serve(settings))  # a StartupError is a UserError: one line, exit 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add serve, with a flag per Settings field, to the `vaeserve` parser's subcommands."""
    p = sub.add_parser(
        "serve", help="serve a model repository over gRPC (extra: serve)", description=DESCRIPTION
    )
    p.set_defaults(func=_serve)
    try:
        flags = serve_flags()
    except ModuleNotFoundError as exc:
        if missing_extra(exc, "serve", "serve") is None:
            raise
        # No serve extra: `vaeserve --help` still works, and `vaeserve serve ...` (any flags)
        # reaches _serve, whose needs_extra names the extra to install.
        p.epilog = "The flags need the 'serve' extra: pip install 'vaeserve[serve]'"
        p.set_defaults(accepts_unknown_args=True)
        return
    from vaeserve.service.settings_doc import flag_name

    for name, (kind, text) in flags.items():
        flag, dest = flag_name(name), f"serve_{name}"
        if kind is None:
            p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, help=text)
        else:
            p.add_argument(
                flag, dest=dest, type=kind, default=None, metavar=name.upper(), help=text
            )
