"""Property-based bad input: Hypothesis generates requests for every RPC (wrong shapes, dtypes,
byte lengths, huge or negative dimensions, NaN/Inf, empty batches, unknown models and versions,
oversize messages, and well-formed ones among them), and each must get exactly the status code
the documented rules predict, with a message that names the problem; good ones must be answered
correctly. One server per module; after each property a known good request must still give the
same bytes as before. Derandomized, so CI runs the same cases every time (`CASES` in total)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaeserve.service.formats import MESSAGE_OVERHEAD, image_bytes
from vaeserve.service.grpc.tensors import to_array
from vaeserve.service.rng import normal_rows
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import ServerThread, running_server
from .test_service_rpcs import scrape

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

# The fuzzed server's limits (conftest.TEST_SETTINGS) and the tiny model.
MAX_BYTES, MAX_IMAGES, MAX_SAMPLE, MAX_STREAM = 100_000, 100, 200, 5000
IMAGE, LATENT = (1, 12, 12), 3
EXAMPLES = {"Encode": 350, "Decode": 300, "Sample": 250, "SampleStream": 150, "GetModelInfo": 100}
CASES = sum(EXAMPLES.values())
UINT32, UINT64, INT64 = 2**32 - 1, 2**64 - 1, 2**63 - 1


def fuzz_settings(method: str) -> settings:
    return settings(
        max_examples=EXAMPLES[method],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@dataclass(frozen=True)
class Expect:
    code: grpc.StatusCode
    fragment: str = ""


@pytest.fixture(scope="module")
def fuzz_server(tiny_repository) -> Iterator[ServerThread]:
    with running_server(tiny_repository, providers="cpu") as srv:
        yield srv


@pytest.fixture(scope="module")
def fuzz_stub(fuzz_server) -> Iterator[vae_pb2_grpc.VaeServiceStub]:
    with grpc.insecure_channel(fuzz_server.target) as channel:
        yield vae_pb2_grpc.VaeServiceStub(channel)


@pytest.fixture(scope="module")
def canary(fuzz_stub) -> bytes:
    """A good request's answer before any fuzzing; it must not change."""
    return fuzz_stub.Sample(pb.SampleRequest(n=5, seed=123), timeout=30).images.data


@pytest.fixture(autouse=True)
def still_correct_afterwards(fuzz_stub, fuzz_server, canary) -> Iterator[None]:
    """After each property: the same bytes for the good request, and no INTERNAL (a bug) ever."""
    yield
    assert fuzz_stub.Sample(pb.SampleRequest(n=5, seed=123), timeout=30).images.data == canary
    metrics = scrape(fuzz_server.metrics_url)
    bugs = {k: v for k, v in metrics.items() if 'code="INTERNAL"' in k or 'code="UNKNOWN"' in k}
    assert not any(bugs.values()), bugs


# --- strategies -------------------------------------------------------------------------------


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy, percent: int = 85) -> st.SearchStrategy:
    """`good` in about `percent`% of the cases, else `bad`: most cases get past the first check
    and reach the deeper ones, yet every check is reached."""
    return st.integers(0, 99).flatmap(lambda k: good if k < percent else bad)


HUGE = st.sampled_from([2**31, 2**40, 2**62, INT64, -1, -(2**63), -(2**31)])
BAD_NAMES = st.one_of(st.text(max_size=30), st.sampled_from(["x" * 2000, "x" * 200_000]))
model_names = mostly(st.sampled_from(["", "tiny"]), BAD_NAMES, 90)
versions = mostly(st.sampled_from([0, 1]), st.integers(0, UINT32), 90)
formats = mostly(st.sampled_from([0, 1, 2, 3]), st.integers(4, 2**31 - 1), 90)


def shapes(tail: tuple[int, ...]) -> st.SearchStrategy[list[int]]:
    """Mostly the right trailing dimensions with any batch; also any rank, size and sign."""
    batch = mostly(st.integers(0, MAX_IMAGES + 10), st.one_of(st.integers(0, 10_000), HUGE), 85)
    dims = st.one_of(st.integers(-2, 16), HUGE)
    return mostly(batch.map(lambda n: [n, *tail]), st.lists(dims, max_size=6), 75)


@st.composite
def tensors(draw: st.DrawFn, tail: tuple[int, ...]) -> pb.Tensor:
    """A Tensor whose shape, dtype, byte length and values are each right or wrong."""
    shape = draw(shapes(tail))
    dtype = draw(mostly(st.sampled_from([1, 2]), st.sampled_from([0, 3, 100]), 90))
    itemsize = 1 if dtype == pb.DTYPE_UINT8 else 4
    count = math.prod(shape) if shape and all(d >= 0 for d in shape) else -1
    mode = draw(mostly(st.just("exact"), st.sampled_from(["short", "long", "random"]), 85))
    if mode == "exact" and 0 <= count * itemsize <= 3 * MAX_BYTES:
        values = draw(mostly(st.sampled_from(["uniform", "zeros"]), st.sampled_from(BAD), 80))
        data = _values(count, dtype, values, draw(st.integers(0, 2**32 - 1)))
    elif mode in ("short", "long") and 0 < count * itemsize <= 3 * MAX_BYTES:
        delta = draw(st.integers(1, 5))
        size = count * itemsize + (delta if mode == "long" else -delta)
        data = b"\x01" * max(0, size)
    else:
        data = draw(st.binary(max_size=300))
    return pb.Tensor(shape=shape, dtype=dtype, data=data)


BAD = ["nan", "inf", "over"]


def _values(count: int, dtype: int, kind: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if dtype == pb.DTYPE_UINT8:
        return rng.integers(0, 256, count, dtype=np.uint8).tobytes()
    x = np.zeros(count, "<f4") if kind == "zeros" else rng.random(count, dtype=np.float32)
    if count and kind in ("nan", "inf", "over"):
        x[rng.integers(0, count)] = {"nan": np.nan, "inf": -np.inf, "over": 1.5}[kind]
    return x.astype("<f4").tobytes()


# --- the documented rules, as an oracle -------------------------------------------------------


def transport(request: object) -> Expect | None:
    if request.ByteSize() > MAX_BYTES:  # type: ignore[attr-defined]
        return Expect(EXHAUSTED, "larger than max")
    return None


def resolve(model: str, version: int) -> Expect | None:
    if model not in ("", "tiny"):
        return Expect(NOT_FOUND, "unknown model")
    if version not in (0, 1):
        return Expect(NOT_FOUND, f"has no version {version}")
    return None


def wire(tensor: pb.Tensor, what: str, present: bool) -> Expect | None:
    if not present:
        return Expect(INVALID, f"{what}: missing")
    if tensor.dtype not in (pb.DTYPE_FLOAT32, pb.DTYPE_UINT8):
        return Expect(INVALID, "is not accepted")
    shape = list(tensor.shape)
    if not shape or any(d < 0 for d in shape):
        return Expect(INVALID, "each >= 0")
    itemsize = 4 if tensor.dtype == pb.DTYPE_FLOAT32 else 1
    if len(tensor.data) != math.prod(shape) * itemsize:
        return Expect(INVALID, "bytes of data")
    if math.prod(d for d in shape if d) * itemsize >= 2**63:  # no data, but no numpy array
        return Expect(INVALID, "too large to address")
    return None


def array(tensor: pb.Tensor) -> np.ndarray:
    """The tensor as numpy sees it (after `wire` found nothing wrong)."""
    dtype = "<f4" if tensor.dtype == pb.DTYPE_FLOAT32 else "u1"
    return np.frombuffer(tensor.data, dtype).reshape(list(tensor.shape))


def count(n: int, what: str) -> Expect | None:
    if n < 1:
        return Expect(INVALID, "need at least 1")
    if n > MAX_IMAGES:
        return Expect(EXHAUSTED, f"max_images_per_request {MAX_IMAGES}")
    return None


def finite(array: np.ndarray) -> Expect | None:
    if not np.isfinite(array).all():
        return Expect(INVALID, "NaN or infinite")
    return None


def expect_encode(r: pb.EncodeRequest) -> Expect:
    present = r.HasField("images")
    early = transport(r) or resolve(r.model, r.version) or wire(r.images, "images", present)
    if early:
        return early
    x = array(r.images)
    if x.ndim != 4 or x.shape[1:] != IMAGE:
        return Expect(INVALID, "[N, 1, 12, 12]")
    if problem := count(len(x), "images"):
        return problem
    if x.dtype == np.uint8:
        return Expect(OK)
    if problem := finite(x):
        return problem
    return Expect(INVALID, "must be in [0, 1]") if x.min() < 0 or x.max() > 1 else Expect(OK)


def expect_decode(r: pb.DecodeRequest) -> Expect:
    early = transport(r) or resolve(r.model, r.version)
    if early:
        return early
    if r.format not in (0, 1, 2, 3):
        return Expect(INVALID, f"unknown ImageFormat value {r.format}")
    if problem := wire(r.latents, "latents", r.HasField("latents")):
        return problem
    z = array(r.latents)
    if z.ndim != 2 or z.shape[1] != LATENT:
        return Expect(INVALID, f"latent_dim {LATENT}")
    if z.dtype != np.dtype("<f4"):
        return Expect(INVALID, "need float32")
    return count(len(z), "latents") or finite(z) or Expect(OK)


FORMAT_NAMES = {0: "float32", 1: "float32", 2: "uint8", 3: "png"}


def expect_sample(r: pb.SampleRequest, stream: bool) -> Expect:
    early = transport(r) or resolve(r.model, r.version)
    if early:
        return early
    if r.format not in FORMAT_NAMES:
        return Expect(INVALID, f"unknown ImageFormat value {r.format}")
    limit = MAX_STREAM if stream else MAX_SAMPLE
    temperature = r.temperature if r.HasField("temperature") else 1.0
    if r.n < 1:
        return Expect(INVALID, "n: got 0")
    if r.n > limit:
        return Expect(EXHAUSTED, f"limit of {limit}")
    if not math.isfinite(temperature) or not 0 <= temperature <= 100:
        return Expect(INVALID, "temperature")
    if r.offset + r.n > 2**63:
        return Expect(INVALID, "2**63")
    per_image = image_bytes(IMAGE, FORMAT_NAMES[r.format]) + 4 * LATENT
    if not stream and r.n * per_image + MESSAGE_OVERHEAD > MAX_BYTES:
        return Expect(EXHAUSTED, "over max_message_bytes")
    return Expect(OK)


def check(seen: Counter[str], expect: Expect, call) -> object | None:
    """Run `call`; the outcome must be `expect` (code and a piece of the message)."""
    seen[expect.code.name] += 1
    try:
        reply = call()
    except grpc.RpcError as err:
        assert err.code() == expect.code, (expect, err.code(), err.details())
        assert err.details() and expect.fragment in err.details(), (expect, err.details())
        return None
    assert expect.code == OK, (expect, "but the call succeeded")
    return reply


def covered(method: str, seen: Counter[str], codes: set[grpc.StatusCode]) -> None:
    """Every case ran, and the cases reached every outcome the RPC has (not just one kind)."""
    print(f"{method}: {sum(seen.values())} cases {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= EXAMPLES[method]
    assert {c.name for c in codes} <= set(seen), seen


# --- the properties ---------------------------------------------------------------------------

encode_requests = st.builds(
    pb.EncodeRequest,
    model=model_names,
    version=versions,
    images=mostly(tensors(IMAGE), st.none(), 95),
    sample=st.booleans(),
    seed=st.one_of(st.none(), st.integers(0, UINT64)),
)
decode_requests = st.builds(
    pb.DecodeRequest,
    model=model_names,
    version=versions,
    latents=mostly(tensors((LATENT,)), st.none(), 95),
    format=formats,
)
sample_n = mostly(
    st.integers(0, 60), st.one_of(st.integers(0, MAX_STREAM + 10), st.integers(0, UINT64)), 70
)
temperatures = mostly(
    st.one_of(st.none(), st.floats(0, 3, width=32), st.sampled_from([0.0, -0.0, 100.0])),
    st.floats(width=32),
    80,
)
sample_requests = st.builds(
    pb.SampleRequest,
    model=model_names,
    version=versions,
    n=sample_n,
    seed=st.one_of(st.none(), st.integers(0, UINT64)),
    temperature=temperatures,
    format=formats,
    offset=mostly(st.integers(0, 1000), st.integers(0, UINT64), 85),
    chunk_size=mostly(st.integers(0, 64), st.integers(0, UINT32), 85),
)


def test_encode(fuzz_stub):
    seen: Counter[str] = Counter()

    @fuzz_settings("Encode")
    @given(request=encode_requests)
    def run(request: pb.EncodeRequest) -> None:
        reply = check(seen, expect_encode(request), lambda: fuzz_stub.Encode(request, timeout=30))
        if reply is not None:
            n = request.images.shape[0]
            assert list(reply.z_mean.shape) == [n, LATENT] == list(reply.z_log_var.shape)
            assert np.isfinite(to_array(reply.z_mean, "z_mean")).all()
            assert reply.HasField("z") == request.sample
            if request.sample and request.HasField("seed"):
                assert reply.seed == request.seed

    run()
    covered("Encode", seen, {OK, INVALID, NOT_FOUND, EXHAUSTED})


def test_decode(fuzz_stub):
    seen: Counter[str] = Counter()

    @fuzz_settings("Decode")
    @given(request=decode_requests)
    def run(request: pb.DecodeRequest) -> None:
        reply = check(seen, expect_decode(request), lambda: fuzz_stub.Decode(request, timeout=30))
        if reply is not None:
            n = request.latents.shape[0]
            if request.format == pb.IMAGE_FORMAT_PNG:
                assert len(reply.png) == n and all(p.startswith(b"\x89PNG") for p in reply.png)
            else:
                assert list(reply.images.shape) == [n, *IMAGE]

    run()
    covered("Decode", seen, {OK, INVALID, NOT_FOUND, EXHAUSTED})


def test_sample(fuzz_stub):
    seen: Counter[str] = Counter()

    @fuzz_settings("Sample")
    @given(request=sample_requests)
    def run(request: pb.SampleRequest) -> None:
        reply = check(
            seen, expect_sample(request, False), lambda: fuzz_stub.Sample(request, timeout=30)
        )
        if reply is not None:
            _check_sampled(request, [reply])

    run()
    covered("Sample", seen, {OK, INVALID, NOT_FOUND, EXHAUSTED})


def test_sample_stream(fuzz_stub):
    seen: Counter[str] = Counter()

    @fuzz_settings("SampleStream")
    @given(request=sample_requests)
    def run(request: pb.SampleRequest) -> None:
        expect = expect_sample(request, True)
        replies = check(seen, expect, lambda: list(fuzz_stub.SampleStream(request, timeout=60)))
        if replies is not None:
            assert isinstance(replies, list)
            _check_sampled(request, replies)

    run()
    covered("SampleStream", seen, {OK, INVALID, NOT_FOUND, EXHAUSTED})


def test_get_model_info(fuzz_stub):
    seen: Counter[str] = Counter()

    @fuzz_settings("GetModelInfo")
    @given(
        request=st.builds(
            pb.GetModelInfoRequest,
            model=mostly(st.sampled_from(["", "tiny"]), BAD_NAMES, 60),
            version=versions,
        )
    )
    def run(request: pb.GetModelInfoRequest) -> None:
        expect = transport(request) or resolve(request.model, request.version) or Expect(OK)
        reply = check(seen, expect, lambda: fuzz_stub.GetModelInfo(request, timeout=30))
        if reply is not None:
            assert (reply.name, reply.version, reply.latent_dim) == ("tiny", 1, LATENT)

    run()
    covered("GetModelInfo", seen, {OK, NOT_FOUND, EXHAUSTED})


def _check_sampled(request: pb.SampleRequest, replies: list[pb.SampleResponse]) -> None:
    """Chunks in order from `offset`, n in all, latents exactly the documented seeded rows."""
    offset = request.offset
    for reply in replies:
        assert reply.offset == offset
        latents = to_array(reply.latents, "latents")
        rows = len(latents)
        if request.HasField("seed"):
            assert reply.seed == request.seed
        temperature = request.temperature if request.HasField("temperature") else 1.0
        expected = normal_rows(reply.seed, offset, rows, LATENT)
        if temperature != 1.0:
            expected = expected * np.float32(temperature)
        np.testing.assert_array_equal(latents, expected)
        images = len(reply.png) if request.format == pb.IMAGE_FORMAT_PNG else reply.images.shape[0]
        assert images == rows
        offset += rows
    assert offset - request.offset == request.n
