"""VaeClient: numpy arrays in and out, deadlines on every call, retries on UNAVAILABLE.

UNAVAILABLE means the request never ran (server starting, draining, connection lost), so it is
safe to retry, with exponential backoff inside the call's deadline: first by the channel itself,
following the service config shipped beside this module (`service_config.json`, the same file
other languages load), then by this client, which waits at least the server's RetryInfo delay.
So is a CANCELLED that the
server sent (not one this process asked for): gRPC core cancels the calls that reach a server in
the instant it stops (docs/reliability.md measures it), and every VaeService method is a pure
function of its request, so running one twice is harmless. A SampleStream interrupted
that way resumes from the first image not yet received (same seed, `offset`), so callers see one
unbroken stream. Other errors are raised as grpc.RpcError; `.code()` and `.details()` say why,
and `error_details(exc)` (`service/client/errors.py`) reads the reason and fields to fix.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Any, Literal, TypeVar, overload

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vaeserve.service.client import latent_map
from vaeserve.service.client.credentials import open_channel
from vaeserve.service.client.errors import error_details
from vaeserve.service.client.results import (
    Concept,
    ConceptLabel,
    Concepts,
    EncodeResult,
    LatentImages,
    ModelInfo,
    SampleResult,
    latent_images_of,
    sample_result_of,
)
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

log = logging.getLogger(__name__)

ImageFormat = Literal["float32", "uint8", "png"]
# By name from the proto's enum (IMAGE_FORMAT_PNG -> "png"): a new format needs no edit here.
FORMATS = {
    name.removeprefix("IMAGE_FORMAT_").lower(): value
    for name, value in pb.ImageFormat.items()
    if name != "IMAGE_FORMAT_UNSPECIFIED"
}
METHODS = {
    "linear": pb.INTERPOLATION_METHOD_LINEAR,
    "spherical": pb.INTERPOLATION_METHOD_SPHERICAL,
}
READINESS = "vaeserve.v1.VaeService"
T = TypeVar("T")


@cache
def service_config() -> str:
    """The shipped gRPC service config (JSON): retry UNAVAILABLE with backoff, no wait for
    ready. Read once, when the first client is made."""
    path = resources.files("vaeserve.service.client").joinpath("service_config.json")
    return path.read_text("utf-8")


def with_service_config(options: list[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    """`options` plus the service config and retries, unless `options` sets them itself."""
    given = {key for key, _ in options or []}
    defaults = [("grpc.service_config", service_config()), ("grpc.enable_retries", 1)]
    return [*(options or []), *(kv for kv in defaults if kv[0] not in given)]


class VaeClient:
    """A blocking client for vaeserve.v1.VaeService. Use as a context manager, or call close().

    `timeout` is the default deadline of each call in seconds (streams: of the whole stream,
    None = no deadline); `retries` is how many more times this client retries a retryable
    error (UNAVAILABLE, or a CANCELLED the server sent) after the channel's own retry policy
    (service_config.json, up to 5 attempts) gave up, and how often a stream resumes; the two
    multiply, so the default is small. For a secured server: `tls` (or
    `root_certificates`, PEM, to verify it by), `client_certificate` and `client_key` (PEM) for
    mutual TLS, `token` for bearer-token authentication.
    """

    def __init__(
        self,
        target: str,
        *,
        model: str = "",
        version: int = 0,
        timeout: float | None = 30.0,
        retries: int = 2,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        options: list[tuple[str, Any]] | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
        token: str | None = None,
    ) -> None:
        self.target = target
        self.model = model
        self.version = version
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_message_bytes = max_message_bytes
        channel_options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            *with_service_config(options),
        ]
        self.channel = open_channel(
            target,
            channel_options,
            tls=tls,
            root_certificates=root_certificates,
            client_certificate=client_certificate,
            client_key=client_key,
            token=token,
        )
        self.stub = vae_pb2_grpc.VaeServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> VaeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the RPCs -------------------------------------------------------------------------

    def encode(
        self,
        images: np.ndarray,
        *,
        sample: bool = False,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> EncodeResult:
        """Images [N, C, H, W] (uint8, or float in [0, 1]) -> posterior mean and log-variance."""
        request = pb.EncodeRequest(
            model=self.model,
            version=self.version,
            images=to_tensor(_images(images)),
            sample=sample,
            seed=seed,
        )
        reply: pb.EncodeResponse = self._unary(self.stub.Encode, request, timeout)
        z = to_array(reply.z, "z") if reply.HasField("z") else None
        return EncodeResult(
            to_array(reply.z_mean, "z_mean"),
            to_array(reply.z_log_var, "z_log_var"),
            z,
            reply.seed,
        )

    @overload
    def decode(
        self,
        latents: np.ndarray,
        *,
        format: Literal["float32", "uint8"] = ...,
        timeout: float | None = ...,
    ) -> np.ndarray: ...
    @overload
    def decode(
        self, latents: np.ndarray, *, format: Literal["png"], timeout: float | None = ...
    ) -> list[bytes]: ...
    def decode(
        self, latents: np.ndarray, *, format: ImageFormat = "float32", timeout: float | None = None
    ) -> np.ndarray | list[bytes]:
        """Latents [N, L] -> images [N, C, H, W] (float32 or uint8), or PNG files."""
        request = pb.DecodeRequest(
            model=self.model,
            version=self.version,
            latents=to_tensor(np.asarray(latents, dtype=np.float32)),
            format=FORMATS[format],
        )
        reply: pb.DecodeResponse = self._unary(self.stub.Decode, request, timeout)
        if not reply.HasField("images"):  # an encoded format (png): one file per image
            return list(reply.encoded)
        return to_array(reply.images, "images")

    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        temperature: float | None = None,
        format: ImageFormat = "float32",
        offset: int = 0,
        concept: str = "",
        timeout: float | None = None,
    ) -> SampleResult:
        """n images from the prior, or with `concept` ("label:K") from the Gaussian fitted to
        where the encoder puts label K; the same seed gives the same images."""
        request = self._sample_request(n, seed, temperature, format, offset, 0, concept)
        return sample_result_of(self._unary(self.stub.Sample, request, timeout))

    def sample_stream(
        self,
        n: int,
        *,
        seed: int | None = None,
        temperature: float | None = None,
        format: ImageFormat = "png",
        offset: int = 0,
        chunk_size: int = 0,
        concept: str = "",
        timeout: float | None = None,
    ) -> Iterator[SampleResult]:
        """Sample for large n, chunk by chunk, in order; resumes after a retryable error."""
        deadline = _deadline(timeout)
        done, attempt = 0, 0
        while done < n:
            request = self._sample_request(
                n - done, seed, temperature, format, offset + done, chunk_size, concept
            )
            try:
                for reply in self.stub.SampleStream(request, timeout=_left(deadline)):
                    chunk = sample_result_of(reply)
                    seed, done, attempt = chunk.seed, done + len(chunk), 0
                    yield chunk
                return
            except grpc.RpcError as exc:
                attempt += 1
                self._backoff_or_raise(exc, attempt, deadline)
                log.info("SampleStream interrupted (%s); resuming at %d", _code(exc), offset + done)

    def model_info(self, timeout: float | None = None) -> ModelInfo:
        request = pb.GetModelInfoRequest(model=self.model, version=self.version)
        r: pb.GetModelInfoResponse = self._unary(self.stub.GetModelInfo, request, timeout)
        limits = {f.name: getattr(r.limits, f.name) for f in r.limits.DESCRIPTOR.fields}
        c, h, w = (int(d) for d in r.image_shape)
        return ModelInfo(
            r.name,
            r.version,
            r.latent_dim,
            (c, h, w),
            r.encoder_sha256,
            r.decoder_sha256,
            list(r.providers),
            list(r.requested_providers),
            r.gpu_fallback,
            r.threads,
            limits,
            [(m.name, m.version) for m in r.models],
            r.server_version,
            r.onnxruntime_version,
            json.loads(r.metadata_json or "{}"),
        )

    def interpolate(
        self,
        start: np.ndarray,
        end: np.ndarray,
        steps: int,
        *,
        method: Literal["linear", "spherical"] = "linear",
        format: ImageFormat = "float32",
        timeout: float | None = None,
    ) -> LatentImages:
        """`steps` decoded points from `start` to `end`, both included. Each end is a latent
        ([L] or [1, L]) or an image ([C, H, W] or [1, C, H, W], uint8 or float in [0, 1]),
        which the server encodes to its posterior mean first."""
        request = pb.InterpolateRequest(
            model=self.model,
            version=self.version,
            steps=steps,
            method=METHODS[method],
            format=FORMATS[format],
        )
        for side, value in (("start", start), ("end", end)):
            kind, array = _endpoint(value)
            getattr(request, f"{side}_{kind}").CopyFrom(to_tensor(array))
        reply: pb.InterpolateResponse = self._unary(self.stub.Interpolate, request, timeout)
        return latent_images_of(reply)

    def list_concepts(self, timeout: float | None = None) -> Concepts:
        """The model's concept vectors and label statistics (empty without concepts.json)."""
        request = pb.ListConceptsRequest(model=self.model, version=self.version)
        r: pb.ListConceptsResponse = self._unary(self.stub.ListConcepts, request, timeout)
        vectors = {
            v.name: Concept(v.name, v.kind, v.description, to_array(v.vector, "vector"), v.norm)
            for v in r.vectors
        }
        labels = {
            c.label: ConceptLabel(
                c.label, c.count, to_array(c.mean, "mean"), to_array(c.covariance, "covariance")
            )
            for c in r.labels
        }
        return Concepts(vectors, labels, r.dataset, r.encoder_sha256)

    def edit(
        self,
        images: np.ndarray,
        concept: str,
        alphas: Sequence[float],
        *,
        format: ImageFormat = "float32",
        timeout: float | None = None,
    ) -> LatentImages:
        """Each image [N, C, H, W] encoded (posterior mean z), z + alpha * v decoded for every
        alpha: row i * len(alphas) + j is image i with alphas[j]."""
        request = pb.EditRequest(
            model=self.model,
            version=self.version,
            images=to_tensor(_images(images)),
            concept=concept,
            alphas=[float(a) for a in alphas],
            format=FORMATS[format],
        )
        return latent_images_of(self._unary(self.stub.Edit, request, timeout))

    def latent_map(
        self,
        *,
        dims: tuple[int, int] = (0, 1),
        grid: int = 20,
        point: Sequence[float] | None = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        """The decoder over a grid x grid slice of latent space (dims[0] to the right, dims[1]
        upward, quantiles 0.05..0.95 of N(0, 1); other dimensions at `point`, default 0), as one
        uint8 picture [C, grid * H, grid * W]. Decoded in as few requests as the server's
        limits allow."""
        info = self.model_info(timeout)
        z = latent_map.slice_latents(grid, info.latent_dim, dims, point)
        size = latent_map.rows_per_request(
            info.limits["max_images_per_request"],
            min(info.limits["max_message_bytes"], self.max_message_bytes),
            info.image_shape,
            "uint8",
        )
        parts = [
            self.decode(z[s], format="uint8", timeout=timeout)
            for s in latent_map.batches(len(z), size)
        ]
        return latent_map.tile(np.concatenate(parts), grid)

    def health(self, service: str = READINESS, timeout: float | None = 5.0) -> str:
        """ "SERVING", "NOT_SERVING", ... of a health service name ("" is liveness)."""
        reply = self.health_stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until readiness is SERVING; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health(timeout=max(0.1, deadline - time.monotonic())) == "SERVING":
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.target} not ready after {timeout}s")
            time.sleep(0.1)

    # --- plumbing -----------------------------------------------------------------------

    def _sample_request(
        self,
        n: int,
        seed: int | None,
        temperature: float | None,
        format: ImageFormat,
        offset: int,
        chunk_size: int,
        concept: str = "",
    ) -> pb.SampleRequest:
        return pb.SampleRequest(
            model=self.model,
            version=self.version,
            n=n,
            seed=seed,
            temperature=temperature,
            format=FORMATS[format],
            offset=offset,
            chunk_size=chunk_size,
            concept=concept,
        )

    def _unary(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        deadline = _deadline(self.timeout if timeout is None else timeout)
        attempt = 0
        while True:
            try:
                return method(request, timeout=_left(deadline))
            except grpc.RpcError as exc:
                attempt += 1
                self._backoff_or_raise(exc, attempt, deadline)

    def _backoff_or_raise(self, exc: grpc.RpcError, attempt: int, deadline: float | None) -> None:
        """Sleep before retry `attempt` of a retryable call, or re-raise `exc`."""
        if not retryable(exc) or attempt > self.retries:
            raise exc
        pause = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        pause *= random.uniform(0.5, 1.0)  # jitter: replicas' clients do not retry in lockstep
        asked = error_details(exc).retry_delay  # the server's RetryInfo, if it sent one
        if asked is not None:
            pause = max(pause, min(asked, self.max_backoff_s))
        if deadline is not None and time.monotonic() + pause >= deadline:
            raise exc
        log.debug("%s from %s; retry %d in %.2fs", _code(exc), self.target, attempt, pause)
        time.sleep(pause)


def _images(images: np.ndarray) -> np.ndarray:
    array = np.asarray(images)
    return array if array.dtype == np.uint8 else array.astype(np.float32, copy=False)


def _endpoint(value: np.ndarray) -> tuple[str, np.ndarray]:
    """("latent", float32 [1, L]) for 1-D or 2-D input, ("image", [1, C, H, W]) for 3-D or 4-D."""
    array = np.asarray(value)
    if array.ndim in (1, 2):
        return "latent", np.asarray(array.reshape(1, -1) if array.ndim == 1 else array, np.float32)
    if array.ndim in (3, 4):
        return "image", _images(array[None] if array.ndim == 3 else array)
    raise ValueError(
        f"an interpolation end must be a latent ([L] or [1, L]) or an image ([C, H, W] or "
        f"[1, C, H, W]); got shape {list(array.shape)}"
    )


LOCAL_CANCEL = "Locally cancelled"  # grpcio's details when this process cancelled the call


def retryable(exc: grpc.RpcError) -> bool:
    """UNAVAILABLE (the request never ran), or CANCELLED by the server (it was stopping)."""
    code = _code(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    details = getattr(exc, "details", None)
    text = (details() if callable(details) else "") or ""
    return code == grpc.StatusCode.CANCELLED and not text.startswith(LOCAL_CANCEL)


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    return code() if callable(code) else None


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.001, deadline - time.monotonic())
