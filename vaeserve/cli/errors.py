"""The command line's own user errors, and `needs_extra`, which turns the import of a missing
extra into one of them (a one-line hint naming the extra to install, not a traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from vaeserve.errors import UserError

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


class UsageError(UserError):
    """A problem with what the user asked for on the command line: one line, exit status 2."""


def missing_extra(exc: ModuleNotFoundError, extra: str, command: str) -> UsageError | None:
    """The UsageError for `exc` when it is a module of `extra` that is not installed, else None
    (a missing module of no extra is a broken installation: it keeps its traceback)."""
    root = (exc.name or "").split(".")[0]
    if root not in EXTRA_MODULES[extra]:
        return None
    return UsageError(
        f"'vaeserve {command}' needs the '{extra}' extra (module '{root}' is not installed): "
        f"pip install 'vaeserve[{extra}]'"
    )


@contextmanager
def needs_extra(extra: str, command: str) -> Iterator[None]:
    """Run a subcommand's body; an import of `extra`'s missing modules becomes a UsageError."""
    try:
        yield
    except ModuleNotFoundError as exc:
        error = missing_extra(exc, extra, command)
        if error is None:
            raise
        raise error from None
