"""Settings: flags override VAESERVE_* override defaults; CPUs from cgroups, not the host."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from vaeserve.cli import SERVE_FLAGS, build_parser, main, settings_from_args
from vaeserve.service.config import Settings, _cgroup_quota, available_cpus
from vaeserve.service.runtime import cuda_options, tensorrt_options

# The contract with deploy/k8s: these names and defaults must not change.
CONTRACT = {
    "repository": None,
    "host": "0.0.0.0",
    "port": 8001,
    "metrics_port": 8002,
    "providers": "auto",
    "require_gpu": False,
    "threads": 0,
    "drain_grace_s": 20.0,
    "log_level": "INFO",
}
OTHER_FIELDS = {
    "max_batch_size", "max_delay_ms", "max_queue", "max_message_bytes",
    "max_images_per_request", "max_sample_n",
}  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(f"VAESERVE_{name.upper()}", raising=False)


def test_contract_fields_and_defaults():
    settings = Settings()
    for name, default in CONTRACT.items():
        assert getattr(settings, name) == default, name
    assert set(Settings.model_fields) >= OTHER_FIELDS


def test_every_field_has_a_docstring():
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 10, name


def test_environment_overrides_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("VAESERVE_PORT", "9100")
    monkeypatch.setenv("VAESERVE_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("VAESERVE_PROVIDERS", "CPU")
    monkeypatch.setenv("VAESERVE_REQUIRE_GPU", "false")
    monkeypatch.setenv("VAESERVE_MAX_DELAY_MS", "0.5")
    monkeypatch.setenv("VAESERVE_LOG_LEVEL", "debug")
    s = Settings()
    assert (s.port, s.repository, s.providers, s.max_delay_ms) == (9100, tmp_path, "cpu", 0.5)
    assert s.log_level == "DEBUG" and s.ort_providers == ["CPUExecutionProvider"]


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("VAESERVE_PORT", "9100")
    monkeypatch.setenv("VAESERVE_MAX_BATCH_SIZE", "8")
    args = build_parser().parse_args(["serve", "--port", "9200"])
    s = settings_from_args(args)
    assert s.port == 9200 and s.max_batch_size == 8


def test_serve_flags_mirror_the_settings():
    assert set(SERVE_FLAGS) == set(Settings.model_fields)
    args = build_parser().parse_args(
        ["serve", "--require-gpu", "--metrics-port", "-1", "--max-delay-ms", "3.5"]
    )
    assert args.serve_require_gpu is True and args.serve_metrics_port == -1
    assert args.serve_max_delay_ms == 3.5 and args.serve_port is None


@pytest.mark.parametrize(
    "bad",
    [
        {"providers": "tpu"},
        {"providers": ""},
        {"providers": "cpu", "require_gpu": True},
        {"port": 70000},
        {"max_batch_size": -1},
        {"metrics_port": -2},
        {"log_level": "LOUD"},
        {"no_such_setting": 1},
    ],
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_provider_order_and_cpu_fallback():
    assert Settings(providers="cuda").ort_providers == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert Settings(providers="cpu, cuda ,cpu").provider_list == ["cpu", "cuda"]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota(tmp_path):
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert _cgroup_quota(tmp_path) == 1.5
    assert available_cpus(tmp_path) <= 2
    write(tmp_path / "cpu.max", "max 100000\n")
    assert _cgroup_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "100000\n")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert _cgroup_quota(tmp_path) == 1.0 and available_cpus(tmp_path) == 1
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    assert _cgroup_quota(tmp_path) is None


def test_threads_zero_means_the_container_cpus():
    assert Settings(threads=0).resolved_threads() == available_cpus() >= 1
    assert Settings(threads=3).resolved_threads() == 3


def test_docs_list_every_setting():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "service.md").read_text()
    missing = [n for n in Settings.model_fields if f"VAESERVE_{n.upper()}" not in docs]
    assert not missing, f"docs/service.md lacks {missing}"


# --- the GPU path's options: settings -> load_runtime ------------------------------------------

RUNTIME_ENV = {
    "VAESERVE_CUDA_DEVICE_ID": "1",
    "VAESERVE_CUDNN_CONV_ALGO_SEARCH": "exhaustive",
    "VAESERVE_GPU_MEM_LIMIT_MB": "512",
    "VAESERVE_ARENA_EXTEND_STRATEGY": "kSameAsRequested",
    "VAESERVE_IO_BINDING": "ON",
    "VAESERVE_BUCKETS": "off",
    "VAESERVE_FP16": "true",
    "VAESERVE_TENSORRT": "1",
    "VAESERVE_TENSORRT_FP16": "yes",
}
RUNTIME_FIELDS = (
    "cuda_device_id", "cudnn_conv_algo_search", "gpu_mem_limit_mb", "arena_extend_strategy",
    "tensorrt", "tensorrt_cache_dir", "tensorrt_fp16", "io_binding", "buckets", "fp16",
)  # fmt: skip


def runtime_options(s: Settings) -> dict[str, object]:
    """The session-building knobs of a Settings (load_runtime reads them from it directly)."""
    return {name: getattr(s, name) for name in RUNTIME_FIELDS}


def test_runtime_defaults():
    # One place holds the defaults: the runtime reads them from Settings, restating none.
    assert runtime_options(Settings()) == dict(
        cuda_device_id=0,
        cudnn_conv_algo_search="HEURISTIC",
        gpu_mem_limit_mb=0,
        arena_extend_strategy="kNextPowerOfTwo",
        tensorrt=False,
        tensorrt_cache_dir=None,
        tensorrt_fp16=False,
        io_binding="auto",
        buckets="auto",
        fp16=False,
    )


def test_runtime_options_from_the_environment(monkeypatch, tmp_path):
    for name, value in {**RUNTIME_ENV, "VAESERVE_TENSORRT_CACHE_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    assert runtime_options(Settings()) == dict(
        cuda_device_id=1,
        cudnn_conv_algo_search="EXHAUSTIVE",
        gpu_mem_limit_mb=512,
        arena_extend_strategy="kSameAsRequested",
        tensorrt=True,
        tensorrt_cache_dir=tmp_path,
        tensorrt_fp16=True,
        io_binding="on",
        buckets="off",
        fp16=True,
    )


def test_runtime_flags_override_the_environment(monkeypatch, tmp_path):
    for name, value in RUNTIME_ENV.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(
        [
            "serve", "--cuda-device-id", "2", "--cudnn-conv-algo-search", "DEFAULT",
            "--gpu-mem-limit-mb", "0", "--arena-extend-strategy", "kNextPowerOfTwo",
            "--io-binding", "off", "--buckets", "on", "--no-fp16", "--tensorrt-cache-dir",
            str(tmp_path), "--no-tensorrt-fp16",
        ]
    )  # fmt: skip
    settings = settings_from_args(args)
    assert runtime_options(settings) == dict(
        cuda_device_id=2,
        cudnn_conv_algo_search="DEFAULT",
        gpu_mem_limit_mb=0,
        arena_extend_strategy="kNextPowerOfTwo",
        tensorrt=True,  # from the environment: not overridden
        tensorrt_cache_dir=tmp_path,
        tensorrt_fp16=False,
        io_binding="off",
        buckets="on",
        fp16=False,
    )
    assert tensorrt_options(settings)["trt_engine_cache_path"] == str(tmp_path)
    assert cuda_options(settings) == {
        "device_id": "2",
        "cudnn_conv_algo_search": "DEFAULT",
        "arena_extend_strategy": "kNextPowerOfTwo",
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"io_binding": "sometimes"}, "io_binding\n  Input should be 'auto', 'on' or 'off'"),
        ({"buckets": True}, "buckets\n  Input should be 'auto', 'on' or 'off'"),
        ({"cudnn_conv_algo_search": "fast"}, "'HEURISTIC', 'EXHAUSTIVE' or 'DEFAULT'"),
        ({"arena_extend_strategy": "double"}, "'kNextPowerOfTwo' or 'kSameAsRequested'"),
        ({"cuda_device_id": -1}, "cuda_device_id\n  Input should be greater than or equal to 0"),
        ({"gpu_mem_limit_mb": -5}, "gpu_mem_limit_mb\n  Input should be greater than or equal"),
        ({"fp16": "half"}, "fp16\n  Input should be a valid boolean"),
        ({"tensorrt": True, "providers": "cpu"}, "tensorrt needs 'cuda' in providers"),
        ({"tensorrt_fp16": True}, "tensorrt_fp16 and tensorrt_cache_dir need tensorrt"),
        ({"tensorrt_cache_dir": "/tmp/trt"}, "tensorrt_fp16 and tensorrt_cache_dir need tensorrt"),
    ],
)
def test_bad_runtime_options_are_refused_with_a_clear_message(bad, message):
    with pytest.raises(ValidationError) as err:
        Settings(**bad)
    assert message in str(err.value)


def test_bad_runtime_flag_is_a_usage_error_naming_the_setting(capsys):
    assert main(["serve", "--io-binding", "sometimes", "--providers", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "vaeserve serve: error: bad settings (flags or VAESERVE_* variables): "
        "io_binding: Input should be 'auto', 'on' or 'off'"
    )


def test_gpu_docs_name_only_real_flags_and_variables():
    # docs/gpu.md documents serve flags and VAESERVE_* variables: each must exist.
    docs = (Path(__file__).resolve().parents[2] / "docs" / "gpu.md").read_text()
    named = re.findall(r"`--([a-z0-9-]+)", docs)
    flags = {f.removeprefix("no-").replace("-", "_") for f in named if f != "no-"}
    variables = {v.lower() for v in re.findall(r"VAESERVE_([A-Z0-9_]+)", docs)}
    assert flags >= {"cuda_device_id", "io_binding", "buckets", "fp16", "tensorrt_cache_dir"}
    assert flags <= set(SERVE_FLAGS), flags - set(SERVE_FLAGS)
    assert variables <= set(Settings.model_fields), variables - set(Settings.model_fields)
