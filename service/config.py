"""The server's one settings object: flags override `VAESERVE_*` environment variables, which
override the defaults below. Built in `main` and passed into constructors; nothing here reads the
environment at import time. Field names and variables are a contract with deploy/k8s."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vaeserve.service.echo import shown

GPU_MAX_BATCH, CPU_MAX_BATCH = 256, 64  # max_batch_size 0 (auto) on each kind of session
MAX_WORKERS = 64  # beyond this, more pods serve better than more processes in one
PROVIDER_NAMES = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
AUTO_PROVIDERS = "auto"  # CUDA where a GPU is usable (probed quietly), else the CPU
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
Switch = Literal["auto", "on", "off"]
ConvAlgoSearch = Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"]
ArenaExtendStrategy = Literal["kNextPowerOfTwo", "kSameAsRequested"]


class Settings(BaseSettings):
    """Everything `vaeserve serve` can be told; each field is also `VAESERVE_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="VAESERVE_", extra="forbid", frozen=True, use_attribute_docstrings=True
    )

    repository: Path | None = None
    """Model repository root (ROOT/NAME/VERSION/...); unset: the bundled MNIST model."""

    host: str = "0.0.0.0"
    """Address the gRPC server binds ("0.0.0.0" all IPv4, "[::]" all IPv6, "127.0.0.1" local)."""

    port: int = Field(8001, ge=0, le=65535)
    """gRPC port; 0 picks a free one (logged, and written to `port_file`)."""

    metrics_port: int = Field(8002, ge=-1, le=65535)
    """Prometheus /metrics HTTP port; 0 disables metrics over HTTP, -1 picks a free port."""

    providers: str = AUTO_PROVIDERS
    """ONNX Runtime providers: "auto", or a priority list comma-separated from "cuda" and "cpu".
    "auto" uses CUDA where a GPU is usable (a CUDA device node and the CUDA libraries ONNX Runtime
    needs, probed once without ONNX Runtime) and the CPU otherwise, silently; with `require_gpu`
    or `tensorrt` it means "cuda,cpu". "cuda,cpu" always tries CUDA and warns when it falls back
    to the CPU (ONNX Runtime logs its own error then)."""

    require_gpu: bool = False
    """Fail at start-up, instead of warning, when CUDA was requested but sessions run on CPU."""

    threads: int = Field(0, ge=0)
    """ONNX Runtime intra-op threads per session; 0 = the CPUs this container may use
    (cgroup cpu quota and CPU affinity, not the host's CPU count), divided among `workers`."""

    workers: int = Field(1, ge=1, le=MAX_WORKERS)
    """Server processes sharing the gRPC port (SO_REUSEPORT), each with its own sessions and
    batchers, behind one /metrics and one health state. More than 1 when one process's event loop
    (about one core of gRPC and Python work) is the limit: many small requests on the CPU. Each
    worker holds its own copy of the models (and on a GPU its own CUDA context)."""

    max_batch_size: int = Field(0, ge=0)
    """Most images in one ONNX Runtime run: bigger requests are split, concurrent ones merged.
    0 = auto: 256 where the sessions run on a GPU (big batches pay there), 64 on the CPU (ONNX
    Runtime's images/s on the CPU is flat from 16 to 256 rows, so bigger runs only make every
    caller in the queue wait longer)."""

    max_delay_ms: float = Field(2.0, ge=0.0, le=10_000.0)
    """How long the first request of a batch waits for others to join it, in milliseconds."""

    batch_wait_when_idle: bool = False
    """Always wait for a full batch or `max_delay_ms` (Triton's fixed policy). Off: wait only
    for as many rows as the previous batch held, so a lone request on a quiet server runs at
    once."""

    max_queue: int = Field(4096, ge=1)
    """Request pieces (of at most max_batch_size rows) waiting per graph; beyond it new requests
    get UNAVAILABLE (reason QUEUE_FULL, with RetryInfo: retryable)."""

    max_message_bytes: int = Field(32 * 1024 * 1024, ge=64 * 1024)
    """Largest gRPC message received or sent, in bytes."""

    max_images_per_request: int = Field(1024, ge=1)
    """Most images (Encode) or latents (Decode) in one request."""

    max_sample_n: int = Field(1024, ge=1)
    """Largest n for the unary Sample; more goes through SampleStream."""

    max_stream_n: int = Field(1_000_000, ge=1)
    """Largest n for SampleStream."""

    stream_prefetch: int = Field(1, ge=0, le=16)
    """SampleStream chunks computed ahead of the one being sent (0: the next chunk starts once
    the transport took the last), so a client that stops reading stops the computing."""

    stream_stall_s: float = Field(1.0, gt=0.0, le=3600.0)
    """A stream whose chunk the transport has not taken after this many seconds drops the
    chunks it computed ahead (recomputed, bit for bit, when the client reads again)."""

    max_stream_chunk_bytes: int = Field(256 * 1024, ge=1024)
    """Largest SampleStream message, in bytes (chunk_size is capped to fit, at least one image a
    message): what a stream whose client stopped reading holds in the server (the message being
    sent, in grpcio's buffer and the transport's)."""

    drain_grace_s: float = Field(20.0, ge=0.0)
    """On SIGTERM: seconds to let in-flight requests finish before the server stops."""

    max_connection_age_s: float = Field(300.0, ge=0.0)
    """Close client connections after this long (0 = never), so load spreads over new replicas."""

    port_file: Path | None = None
    """If set, write {"port": ..., "metrics_port": ...} as JSON here once the server is ready."""

    log_level: LogLevel = "INFO"
    """Logging level of the server (case does not matter)."""

    max_concurrent_requests: int = Field(1024, ge=1)
    """VaeService RPCs handled at once; beyond it new ones get UNAVAILABLE (reason
    CONCURRENCY_LIMIT, with RetryInfo) at once, so a flood cannot grow memory without bound."""

    reflection: bool = True
    """Serve gRPC server reflection (grpcurl and other tools list the services through it)."""

    tls_cert: Path | None = None
    """PEM certificate chain of the server; with `tls_key`, the port speaks TLS only."""

    tls_key: Path | None = None
    """PEM private key of `tls_cert` (never logged)."""

    tls_client_ca: Path | None = None
    """PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS)."""

    auth_token_file: Path | None = None
    """File holding the bearer token VaeService calls must send (`authorization: Bearer ...`);
    health and reflection stay open. Unset: no token needed."""

    poll_repository_s: float = Field(0.0, ge=0.0)
    """Check the repository for changes this often (seconds) and reload when it changed;
    0 = only on SIGHUP."""

    cuda_device_id: int = Field(0, ge=0)
    """CUDA device the sessions (and TensorRT) run on, as numbered by CUDA_VISIBLE_DEVICES."""

    cudnn_conv_algo_search: ConvAlgoSearch = "HEURISTIC"
    """How cuDNN picks convolution algorithms: HEURISTIC (no benchmarking, so a short start-up
    and the same choice, hence the same bytes, on every replica with the same GPU), EXHAUSTIVE
    (benchmarks each shape; may differ per replica) or DEFAULT."""

    gpu_mem_limit_mb: int = Field(0, ge=0)
    """Ceiling of the CUDA memory arena on the device, in MiB; 0 = no limit."""

    arena_extend_strategy: ArenaExtendStrategy = "kNextPowerOfTwo"
    """How the CUDA arena grows: kNextPowerOfTwo (fewer, larger allocations) or
    kSameAsRequested (only what is asked for, for tight `gpu_mem_limit_mb`)."""

    io_binding: Switch = "auto"
    """Bind inputs and outputs to the sessions (one copy each way per run): auto = on where a GPU
    provider is active, on, or off."""

    buckets: Switch = "auto"
    """Pad batches to powers of two up to `max_batch_size`, all warmed up before readiness, so no
    request pays for a first run of its shape: auto = on where a GPU provider is active, on, off."""

    fp16: bool = False
    """Serve the float16 graph variants (written by `vaeserve export --fp16`); a model without
    them fails to load."""

    tensorrt: bool = False
    """Put ONNX Runtime's TensorRT provider before CUDA (needs "cuda" in `providers`); if it does
    not load, the log says so and CUDA or the CPU serves."""

    tensorrt_cache_dir: Path | None = None
    """Folder for TensorRT engine and timing caches, so engines are built once per shape and
    survive restarts; unset: engines are rebuilt at every start."""

    tensorrt_fp16: bool = False
    """Let TensorRT use float16 kernels (with `tensorrt`)."""

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: str) -> str:
        names = [p.strip().lower() for p in value.split(",") if p.strip()]
        if names == [AUTO_PROVIDERS]:
            return AUTO_PROVIDERS
        unknown = sorted(set(names) - set(PROVIDER_NAMES))
        if not names or unknown:
            raise ValueError(
                f"providers must be 'auto' or a comma-separated list of {sorted(PROVIDER_NAMES)}, "
                f"got {shown(value)}"
            )
        return ",".join(dict.fromkeys(names))

    @field_validator("log_level", "cudnn_conv_algo_search", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("io_binding", "buckets", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _gpu_requested(self) -> Settings:
        if self.require_gpu and "cuda" not in self.provider_list:
            raise ValueError("require_gpu needs 'cuda' in providers")
        return self

    @model_validator(mode="after")
    def _tensorrt_complete(self) -> Settings:
        # Refused rather than ignored: TensorRT is only ever tried in front of CUDA.
        if self.tensorrt and "cuda" not in self.provider_list:
            raise ValueError("tensorrt needs 'cuda' in providers (TensorRT runs in front of CUDA)")
        if not self.tensorrt and (self.tensorrt_fp16 or self.tensorrt_cache_dir is not None):
            raise ValueError("tensorrt_fp16 and tensorrt_cache_dir need tensorrt")
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        return self

    def repository_root(self) -> Path:
        """The repository served: `repository`, or the bundled default model's."""
        from vaeserve.service.repository import bundled_repository

        return Path(self.repository or bundled_repository())

    @property
    def provider_list(self) -> list[str]:
        """Short names, e.g. ["cuda", "cpu"]; "auto" lists its candidates (runtime.py decides)."""
        if self.providers == AUTO_PROVIDERS:
            return ["cuda", "cpu"]
        return self.providers.split(",")

    @property
    def ort_providers(self) -> list[str]:
        """ONNX Runtime names, with the CPU provider always last as the fallback."""
        names = [PROVIDER_NAMES[p] for p in self.provider_list]
        if PROVIDER_NAMES["cpu"] not in names:
            names.append(PROVIDER_NAMES["cpu"])
        return names

    def resolved_max_batch_size(self, on_gpu: bool) -> int:
        """`max_batch_size`, or its automatic value for sessions on a GPU or on the CPU."""
        return self.max_batch_size or (GPU_MAX_BATCH if on_gpu else CPU_MAX_BATCH)

    def resolved_threads(self) -> int:
        """`threads`, or when it is 0 this worker's share of the CPUs this container may use
        (at least 1), so N workers' sessions do not oversubscribe the cores."""
        return self.threads or max(1, available_cpus() // self.workers)


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota (v2 or v1).

    os.cpu_count() reports the host's CPUs; a container limited to 2 CPUs on a 64-core host
    that starts 64 threads per session spends its quota on contention.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    """CPU quota in CPUs from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`; None if unlimited."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota == "max":
                return None
            return int(quota) / int(period or 100_000)
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            quota_us = int(v1.read_text())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None
