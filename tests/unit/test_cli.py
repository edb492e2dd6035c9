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


# --- the error boundary: a UserError is one line, anything else a bug with its traceback -------


def test_user_errors_share_one_base_and_carry_an_exit_status():
    from vaeserve.cli import RpcFailed, UsageError
    from vaeserve.errors import InputError, UserError
    from vaeserve.export.concepts import ConceptBuildError
    from vaeserve.service.client.generate import GenerateError
    from vaeserve.service.concepts import ConceptsError
    from vaeserve.service.errors import StartupError
    from vaeserve.service.repository import RepositoryError
    from vaeserve.training.data import DatasetError

    for cls in (DatasetError, ConceptBuildError, GenerateError, ConceptsError, RepositoryError,
                InputError):  # fmt: skip
        assert issubclass(cls, UserError) and issubclass(cls, ValueError), cls
        assert cls("x").exit_status == 2
    assert issubclass(StartupError, RuntimeError) and StartupError("x").exit_status == 1
    assert RpcFailed("x").exit_status == 1 and UsageError("x").exit_status == 2


@pytest.fixture
def failing_evaluate(monkeypatch):
    """`vaeserve evaluate` whose handler raises the exception it is given (no torch needed)."""
    import vaeserve.cli.train

    def use(exc: BaseException) -> None:
        def handler(args):
            raise exc

        monkeypatch.setattr(vaeserve.cli.train, "_evaluate", handler)

    return use


def test_a_user_error_is_one_line_and_exit_status_2(failing_evaluate, capsys):
    from vaeserve.cli import main
    from vaeserve.training.data import DatasetError

    failing_evaluate(DatasetError("data.npz: contains no images"))
    assert main(["evaluate", "--checkpoint", "c.pt"]) == 2
    err = capsys.readouterr().err
    assert err == "vaeserve evaluate: error: data.npz: contains no images\n"


def test_debug_adds_the_traceback(failing_evaluate, capsys):
    from vaeserve.cli import main
    from vaeserve.cli.client import RpcFailed

    failing_evaluate(RpcFailed("UNAVAILABLE: no server"))
    assert main(["--debug", "evaluate", "--checkpoint", "c.pt"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "RpcFailed: UNAVAILABLE: no server" in lines[-2]
    assert lines[-1] == "vaeserve evaluate: error: UNAVAILABLE: no server"


def test_a_bug_is_not_caught(failing_evaluate):
    from vaeserve.cli import main

    failing_evaluate(ValueError("a bug deep in the code"))
    with pytest.raises(ValueError, match="a bug deep in the code"):
        main(["evaluate", "--checkpoint", "c.pt"])


def test_a_bug_in_a_handler_prints_its_traceback():
    prelude = (
        "import sys, vaeserve.cli.train as t\n"
        "def bug(args):\n"
        "    raise ValueError('a bug deep in the code')\n"
        "t._evaluate = bug\n"
    )
    code = prelude + "from vaeserve.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "evaluate", "--checkpoint", "c.pt"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1  # Python's own exit status for an uncaught exception
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):" and len(lines) > 3
    assert lines[-1] == "ValueError: a bug deep in the code"
    assert "error:" not in result.stderr


def test_a_bad_flag_value_deep_in_training_is_one_line(tmp_path):
    result = run_cli("train", "--data", "x.npz", "--out", str(tmp_path / "r"), "--epochs", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "vaeserve train: error: epochs must be >= 1, got 0"
    ]


def test_bad_stages_are_a_usage_error_or_one_line(tmp_path, shapes_npz):
    result = run_cli("train", "--data", "x.npz", "--out", str(tmp_path / "r"), "--stages", "32,x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--stages: expected comma-separated channel counts such as 32,64,128" in result.stderr
    result = run_cli("train", "--data", str(shapes_npz), "--out", str(tmp_path / "r"),
                     "--stages", "8,8,8,8,8,8,8")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "vaeserve train: error: stages: 1 to 6 stride-2 stages, got 7"
    )


def test_an_unreadable_token_file_is_one_line_naming_the_flag(tmp_path):
    missing = tmp_path / "no-token"
    result = run_cli("list-concepts", "--token-file", str(missing))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"vaeserve list-concepts: error: --token-file {missing}: cannot read it "
        "(No such file or directory)"
    ]


def test_bad_batch_sizes_are_a_usage_error():
    result = run_cli("export", "--checkpoint", "c.pt", "--repository", "r", "--name", "m",
                     "--version", "1", "--batch-sizes", "1,x")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--batch-sizes: expected comma-separated integers, got '1,x'" in result.stderr


# --- serve's flags come from Settings ----------------------------------------------------------


def test_serve_flag_types_follow_the_field_annotations():
    from pathlib import Path
    from typing import Literal

    from vaeserve.cli.serve import _flag_type

    assert _flag_type("a", bool) == (None, ())
    assert _flag_type("a", Path | None) == (Path, ())
    assert _flag_type("a", int) == (int, ()) and _flag_type("a", float) == (float, ())
    assert _flag_type("a", Literal["auto", "on", "off"]) == (str, ("auto", "on", "off"))
    with pytest.raises(TypeError, match=r"Settings\.a"):
        _flag_type("a", list[int])


def test_serve_help_is_each_fields_docstring_default_and_variable():
    from vaeserve.cli import SERVE_FLAGS
    from vaeserve.service.config import Settings

    for name, field in Settings.model_fields.items():
        _, text = SERVE_FLAGS[name]
        assert text.startswith(" ".join(field.description.split())), name
        assert text.endswith(f"; env VAESERVE_{name.upper()})"), name
    assert "(one of DEBUG, INFO, WARNING, ERROR; default: INFO;" in SERVE_FLAGS["log_level"][1]
    assert "(default: unset; env VAESERVE_PORT_FILE)" in SERVE_FLAGS["port_file"][1]
    assert "(default: true; env VAESERVE_REFLECTION)" in SERVE_FLAGS["reflection"][1]


def test_without_the_serve_extra_help_works_and_serve_names_the_extra():
    result = run_cli("--help", block="pydantic_settings")
    assert result.returncode == 0 and "serve" in result.stdout
    result = run_cli("serve", "--help", block="pydantic_settings")
    assert result.returncode == 0 and "pip install 'vaeserve[serve]'" in result.stdout
    result = run_cli("serve", "--port", "9000", "--no-reflection", block="pydantic_settings")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'vaeserve serve' needs the 'serve' extra" in lines[0]


def test_an_unknown_flag_is_still_refused():
    result = run_cli("serve", "--no-such-flag")
    assert result.returncode == 2 and "unrecognized arguments: --no-such-flag" in result.stderr


def test_a_port_file_in_a_missing_folder_is_one_line(tmp_path):
    port_file = tmp_path / "nowhere" / "ports.json"
    result = run_cli("serve", "--providers", "cpu", "--port", "0", "--port-file", str(port_file))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"vaeserve serve: error: port_file {port_file}: no folder {port_file.parent}"
    )
