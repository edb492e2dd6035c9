"""Regenerate the checked-in gRPC stubs (`*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`) of every
served proto: vaeserve/v1/vae.proto (vaeserve.v1) and the vendored KServe V2
inference/grpc_predict_v2.proto (vaeserve.inference).

One place for the protoc command lines: `make stubs` runs it, and the staleness test runs it into
a temporary folder and compares bytes. Needs grpcio-tools (the `dev` extra).

The KServe proto keeps the folder buf does not lint (protos/inference, the names are KServe's)
but is compiled under the import path vaeserve/inference, so its generated code imports itself
as `vaeserve.inference` (the package pyproject.toml maps to protos/inference).

    python protos/generate.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

PROTOS = Path(__file__).resolve().parent


class Proto(NamedTuple):
    """One proto: its folder under protos/, its file, and the import path its stubs use (a
    NamedTuple, not a dataclass: the staleness test loads this file outside sys.modules)."""

    folder: str  # under protos/ (and under --out)
    name: str  # file stem
    import_path: str  # the folder as the generated code imports it

    @property
    def stubs(self) -> tuple[str, ...]:
        return (f"{self.name}_pb2.py", f"{self.name}_pb2.pyi", f"{self.name}_pb2_grpc.py")


VAE = Proto("vaeserve/v1", "vae", "vaeserve/v1")
INFERENCE = Proto("inference", "grpc_predict_v2", "vaeserve/inference")
PROTOS_SERVED = (VAE, INFERENCE)
# Kept for callers of the old single-proto layout.
PROTO = f"{VAE.folder}/{VAE.name}.proto"
STUBS = VAE.stubs


def _protoc(proto: Proto, out: Path) -> list[Path]:
    """Compile one proto into OUT/<its folder>; returns the stubs' paths."""
    from grpc_tools import protoc  # the dev extra; imported here so --help works without it

    include = Path(protoc.__file__).parent / "_proto"
    target = out / proto.folder
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vaeserve-stubs-") as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{proto.import_path}={PROTOS / proto.folder}",  # the import path the code uses
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"{proto.import_path}/{proto.name}.proto",
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTOS / proto.folder / proto.name}.proto")
        paths = []
        for stub in proto.stubs:
            shutil.copyfile(Path(tmp) / proto.import_path / stub, target / stub)
            paths.append(target / stub)
    return paths


def generate(out: Path = PROTOS) -> list[Path]:
    """Run protoc on every served proto, writing the stubs under OUT/<folder>; returns their
    paths (relative to OUT they are the checked-in files' paths relative to protos/)."""
    out.mkdir(parents=True, exist_ok=True)
    return [path for proto in PROTOS_SERVED for path in _protoc(proto, out)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=PROTOS, help="root to write the stubs into")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
