"""The client subcommands' shared plumbing (their flags, the VaeClient they talk through, a
refused call as one line), and the two that are not about latent space: `generate` and
`list-concepts` (extra: serve). `vaeserve.cli.latent` has the others."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from vaeserve.cli.errors import UsageError, needs_extra
from vaeserve.errors import UserError
from vaeserve.service.echo import shown

if TYPE_CHECKING:
    import grpc

    from vaeserve.service.client import VaeClient


class RpcFailed(UserError):
    """The server refused a client subcommand's call, or could not be reached: exit status 1."""

    exit_status = 1


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[VaeClient]:
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
        raise RpcFailed(rpc_error_line(args.target, exc.code(), exc.details() or "")) from None
    finally:
        client.close()


def rpc_error_line(target: str, code: grpc.StatusCode, details: str) -> str:
    """A failed call as one line; a refused connection says how to start a server."""
    text = details.lower()
    refused = "connection refused" in text
    if code.name == "UNAVAILABLE" and (refused or "no such file or directory" in text):
        why = "connection refused" if refused else "no such socket file"
        return (
            f"UNAVAILABLE: no server at {target} ({why}); start one with "
            "`vaeserve serve` or `make serve`"
        )
    return f"{code.name}: {details}"


# gRPC's own name-resolver schemes, passed through as they are (see gRPC's naming.md).
TARGET_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")
HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.%\w]+\]|[^\s:/\[\]]+):(\d{1,5})")


def target_arg(text: str) -> str:
    """--target's type: HOST:PORT, [IPv6]:PORT or a gRPC scheme (unix:PATH, dns:...), checked
    up front, so `--target 8001` is one line instead of a DNS lookup of a host named 8001."""
    if text.startswith(TARGET_SCHEMES) and len(text.split(":", 1)[1]) > 0:
        return text
    match = HOST_PORT.fullmatch(text)
    if match is None or not 0 < int(match.group(1)) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT (e.g. localhost:8001), [IPv6]:PORT or unix:PATH, got {shown(text)}"
        )
    return text


def _client_security(args: argparse.Namespace) -> dict[str, object]:
    """VaeClient's TLS and token arguments from the client flags (files read here: one that
    cannot be read is a UsageError naming its flag)."""

    def read(flag: str, path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot read it ({exc.strerror})") from None

    token = read("--token-file", args.token_file)
    try:
        text = token.decode().strip() if token else None
    except UnicodeDecodeError:
        raise UsageError(f"--token-file {args.token_file}: the token is not UTF-8 text") from None
    return {
        "tls": args.tls,
        "root_certificates": read("--root-cert", args.root_cert),
        "client_certificate": read("--client-cert", args.client_cert),
        "client_key": read("--client-key", args.client_key),
        "token": text,
    }


def save_picture(images: object, out: Path, ncol: int, scale: int) -> dict[str, object]:
    """uint8 images as one PNG grid (`ncol` per row); the summary line's fields."""
    from vaeserve.imaging import save_grid

    save_grid(images, out, ncol=ncol, scale=scale)  # type: ignore[arg-type]
    return {"out": str(out), "images": len(images), "columns": ncol}  # type: ignore[arg-type]


def picture_flags(p: argparse.ArgumentParser) -> None:
    """--out and --scale of the subcommands that write one picture."""
    p.add_argument("--out", type=Path, required=True, help="PNG file")
    p.add_argument("--scale", type=int, default=1, help="enlarge the picture this many times")


def client_flags(p: argparse.ArgumentParser, *, target: bool = True) -> None:
    """Flags every client subcommand shares: server, model, deadline, TLS and token."""
    if target:
        p.add_argument(
            "--target", type=target_arg, default="localhost:8001", help="server HOST:PORT"
        )
    p.add_argument("--model", default="", help="model name; default: the server's default")
    p.add_argument("--version", type=int, default=0, help="model version; 0 = highest")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each unary call, s")
    p.add_argument("--tls", action="store_true", help="TLS, verified by the system's roots")
    p.add_argument("--root-cert", type=Path, default=None, help="PEM CA to verify the server by")
    p.add_argument("--client-cert", type=Path, default=None, help="PEM client cert (mutual TLS)")
    p.add_argument("--client-key", type=Path, default=None, help="PEM key of --client-cert")
    p.add_argument("--token-file", type=Path, default=None, help="file with the bearer token")


def _generate(args: argparse.Namespace) -> int:
    with needs_extra("serve", "generate"), connect(args) as client:
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


def _list_concepts(args: argparse.Namespace) -> int:
    with needs_extra("serve", "list-concepts"), connect(args) as client:
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add generate and list-concepts to the `vaeserve` parser's subcommands."""
    p = sub.add_parser(
        "generate",
        help="write N sampled images from a running server as PNG files (extra: serve)",
        description="Stream N samples from a vaeserve server into DIR/NNNNNN.png plus a "
        "contact sheet. Re-running the same command fetches only the images still missing.",
    )
    p.add_argument("--target", type=target_arg, default="localhost:8001", help="server HOST:PORT")
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
    client_flags(p, target=False)
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "list-concepts",
        help="the concept vectors and labels a model serves, as JSON (extra: serve)",
    )
    client_flags(p)
    p.set_defaults(func=_list_concepts)
