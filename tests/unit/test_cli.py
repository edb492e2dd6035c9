"""The `vaeserve` command as a user runs it: in a subprocess, reading its output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vaeserve import __version__


def run_cli(*args: str, block: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `vaeserve ARGS`; `block` makes a module unimportable, as if its extra were missing."""
    prelude = f"import sys; sys.modules[{block!r}] = None; " if block else "import sys; "
    code = prelude + "from vaeserve.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"vaeserve {__version__}"


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_missing_extra_is_one_line_not_a_traceback(tmp_path, command):
    args = ["--checkpoint", "x.pt"] if command == "evaluate" else ["--data", "x", "--out", "o"]
    result = run_cli(command, *args, block="torch")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"'vaeserve {command}' needs the 'train' extra" in lines[0]
    assert "pip install 'vaeserve[train]'" in lines[0]


def test_bad_data_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "corrupt.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00junk")
    result = run_cli("train", "--data", str(bad), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "corrupt.gz" in result.stderr and "gzip" in result.stderr


@pytest.mark.slow
def test_train_then_evaluate(tmp_path, shapes_npz):
    run = tmp_path / "run"
    result = run_cli(
        "train",
        "--data",
        str(shapes_npz),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--limit",
        "96",
        "--batch-size",
        "32",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["val_nelbo"] > 0
    result = run_cli(
        "evaluate",
        "--checkpoint",
        str(run / "checkpoint.pt"),
        "--data",
        str(shapes_npz),
        "--iw-samples",
        "4",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["images"] == 320 and out["iw_samples"] == 4
    assert {"nelbo", "recon", "kl", "iwae_nll"} <= set(out)
    result = run_cli("train", "--out", str(run), "--resume", "--epochs", "2", "--quiet")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("command", "args", "block"),
    [
        ("concepts", ["--data", "d", "--repository", "r", "--name", "m", "--version", "1"],
         "onnxruntime"),
        ("interpolate", ["--from-latent", "0", "0", "--to-latent", "1", "1", "--out", "x.png"],
         "grpc"),
        ("edit", ["--image", "a.png", "--concept", "label:1", "--out", "x.png"], "grpc"),
        ("latent-map", ["--out", "x.png"], "grpc"),
        ("sample", ["--concept", "label:3", "--out", "x.png"], "grpc"),
        ("list-concepts", [], "grpc"),
    ],
)  # fmt: skip
def test_latent_space_commands_without_the_serve_extra(command, args, block):
    result = run_cli(command, *args, block=block)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"'vaeserve {command}' needs the 'serve' extra" in lines[0]


def test_concepts_never_imports_torch(tmp_path):
    """Building concepts.json runs the exported encoder on ONNX Runtime: with torch unimportable
    it still gets as far as reading the (missing) model version."""
    result = run_cli(
        "concepts", "--data", "d.npz", "--repository", str(tmp_path), "--name", "m",
        "--version", "1", block="torch",
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model.json" in result.stderr and "torch" not in result.stderr
