"""A new user's first minutes (issue 17, section 5): the defaults, the one-line errors and the
README's commands, each held to what the README and `--help` promise."""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

import grpc
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from vaeserve.cli.client import rpc_error_line, target_arg
from vaeserve.service.config import Settings
from vaeserve.service.cuda_probe import cuda_usable, elf_needed, requested_providers
from vaeserve.service.errors import StartupError
from vaeserve.service.metrics import Metrics
from vaeserve.service.runtime import CPU, CUDA

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(f"VAESERVE_{name.upper()}", raising=False)


def vaeserve(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from vaeserve.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


# --- providers "auto" ---------------------------------------------------------------------------


def test_providers_default_is_auto_and_auto_stands_alone():
    assert Settings().providers == "auto"
    assert Settings(providers=" AUTO ").providers == "auto"
    assert Settings(providers="auto").provider_list == ["cuda", "cpu"]
    with pytest.raises(ValidationError, match="providers must be 'auto' or a comma-separated"):
        Settings(providers="auto,cpu")
    with pytest.raises(ValidationError) as err:
        Settings(providers="x" * 10_000)
    assert "(10000 characters)" in str(err.value) and "x" * 1000 not in str(err.value)


def test_no_device_node_means_no_cuda(tmp_path):
    usable, why = cuda_usable(0, tmp_path)
    assert not usable
    if CUDA in ort.get_available_providers():
        assert why == f"no CUDA device ({tmp_path}/nvidia* absent)"


@pytest.mark.skipif(CUDA not in ort.get_available_providers(), reason="no onnxruntime-gpu")
def test_the_probe_reads_the_libraries_the_cuda_provider_links():
    provider = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    needed = elf_needed(provider)
    assert any(n.startswith("libcudart.so") for n in needed)
    assert any(n.startswith("libcublasLt.so") for n in needed)
    assert elf_needed(Path(__file__)) == []  # not an ELF file


def test_a_fake_device_node_without_cuda_libraries_is_not_usable(tmp_path):
    (tmp_path / "nvidia0").touch()
    usable, why = cuda_usable(0, tmp_path)
    if usable:
        pytest.skip("the CUDA libraries load here: a fake node proves nothing")
    assert not usable and why


def test_auto_asks_for_cuda_only_where_usable():
    usable, _ = cuda_usable()
    auto = requested_providers(Settings())
    assert auto == ([CUDA, CPU] if usable else [CPU])
    # Asked for by name (or implied by require_gpu / tensorrt): tried, loudly, as before.
    assert requested_providers(Settings(providers="cuda,cpu")) == [CUDA, CPU]
    assert requested_providers(Settings(providers="cuda")) == [CUDA, CPU]
    assert requested_providers(Settings(require_gpu=True)) == [CUDA, CPU]
    assert requested_providers(Settings(providers="cpu")) == [CPU]


# --- a busy metrics port ------------------------------------------------------------------------


def test_busy_metrics_port_is_one_line_naming_port_and_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError) as err:
            Metrics().serve_http("127.0.0.1", port)
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message
    assert "--metrics-port" in message and "VAESERVE_METRICS_PORT" in message
    assert err.value.exit_status == 1


# --- client targets and a refused connection ----------------------------------------------------


@pytest.mark.parametrize(
    "good",
    ["localhost:8001", "127.0.0.1:1", "[::1]:8001", "unix:/tmp/vae.sock", "dns:///host:8001"],
)
def test_good_targets_pass_unchanged(good):
    assert target_arg(good) == good


@pytest.mark.parametrize("bad", ["8001", "localhost", "host:0", "host:70000", "a b:1", "h:p", ""])
def test_bad_targets_are_refused_before_any_lookup(bad):
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected HOST:PORT \(e\.g\."):
        target_arg(bad)


def test_target_8001_on_the_command_line_is_one_usage_line():
    result = vaeserve("list-concepts", "--target", "8001")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "vaeserve list-concepts: error: argument --target: expected HOST:PORT "
        "(e.g. localhost:8001), [IPv6]:PORT or unix:PATH, got '8001'"
    )
    assert "resolving" not in result.stderr  # no DNS lookup of a host named 8001


def test_refused_connection_says_how_to_start_a_server():
    details = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: " + (
        "Failed to connect to remote host: Connection refused"
    )
    line = rpc_error_line("127.0.0.1:9", grpc.StatusCode.UNAVAILABLE, details)
    assert line == (
        "UNAVAILABLE: no server at 127.0.0.1:9 (connection refused); start one with "
        "`vaeserve serve` or `make serve`"
    )
    other = rpc_error_line("h:1", grpc.StatusCode.INVALID_ARGUMENT, "n must be positive")
    assert other == "INVALID_ARGUMENT: n must be positive"


# --- train --help -------------------------------------------------------------------------------


def test_train_needs_data_or_resume():
    usage = vaeserve("train", "--help").stdout
    assert "(--data DATA | --resume)" in usage  # required, one of the two
    result = vaeserve("train", "--out", "run")
    assert result.returncode == 2
    assert "one of the arguments --data --resume is required" in result.stderr


# --- make, git and packaging --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_help_lists_every_target_the_readme_uses():
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"\bmake ([a-z][a-z-]*)", readme)) - {"help"}
    assert {"serve", "test", "deploy-check", "default-model"} <= used
    listed = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    shown = set(re.findall(r"^make ([a-z][a-z-]*)", listed, re.MULTILINE))
    assert used <= shown, f"README uses targets `make help` does not list: {used - shown}"


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_torch_index_switches_pip_to_that_index(tmp_path):
    def torch_line(*extra: str) -> str:
        out = subprocess.run(
            ["make", "-n", "-C", str(ROOT), "venv", f"VENV={tmp_path}/v", *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return next(line for line in out.splitlines() if '"torch==' in line)

    index = "https://download.pytorch.org/whl/cpu"
    assert f"--index-url {index}" in torch_line(f"TORCH_INDEX={index}")
    assert "--index-url" not in torch_line()


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_samples_from_the_first_client_call_are_ignored():
    result = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", "samples/000000.png"], timeout=30
    )
    assert result.returncode == 0


def test_bundled_model_is_package_data_without_the_manifest_scan():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # The manifest scan (include-package-data) is what warned that vaeserve.models.mnist is a
    # package missing from `packages`; the model comes from package-data alone.
    assert setuptools["include-package-data"] is False
    assert "models/*/*/*.onnx" in setuptools["package-data"]["vaeserve"]
    version = resources.files("vaeserve") / "models" / "mnist" / "1"
    assert {"encoder.onnx", "decoder.onnx", "model.json", "concepts.json"} <= {
        p.name for p in version.iterdir()
    }
