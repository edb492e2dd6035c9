"""Regenerate the checked-in gRPC stubs (vae_pb2.py, vae_pb2.pyi, vae_pb2_grpc.py) from vae.proto.

One place for the protoc command line: `make stubs` runs it, and the staleness test runs it into
a temporary folder and compares bytes. Needs grpcio-tools (the `dev` extra).

    python protos/generate.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTOS = Path(__file__).resolve().parent
PROTO = "vaeserve/v1/vae.proto"
STUBS = ("vae_pb2.py", "vae_pb2.pyi", "vae_pb2_grpc.py")


def generate(out: Path = PROTOS) -> list[Path]:
    """Run protoc on vae.proto, writing the stubs under OUT/vaeserve/v1; returns their paths."""
    from grpc_tools import protoc  # the dev extra; imported here so --help works without it

    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTOS / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTOS / PROTO}")
    return [out / "vaeserve" / "v1" / name for name in STUBS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=PROTOS, help="root to write vaeserve/v1 into")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
