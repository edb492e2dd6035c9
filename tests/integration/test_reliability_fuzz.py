"""Property-based bad input: Hypothesis generates requests for every RPC (wrong shapes, dtypes,
byte lengths, huge or negative dimensions, NaN/Inf, empty batches, unknown models and versions,
unknown concepts, bad alphas and steps, oversize messages, and well-formed ones among them), and
each must get exactly the status code the documented rules predict, with a message that names the
problem; good ones must be answered correctly. One server per module, its model with a
concepts.json (so Edit and Sample's `concept` reach their deeper checks); after each property a
known good request must still give the same bytes as before. Derandomized, so CI runs the same
cases every time (`CASES` in total)."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaeserve.export.concepts import build_concepts
from vaeserve.service import latent
from vaeserve.service.concepts import Concepts, load_concepts
from vaeserve.service.formats import MESSAGE_OVERHEAD, image_bytes
from vaeserve.service.grpc.tensors import to_array
from vaeserve.service.repository import read_model
from vaeserve.service.rng import normal_rows
from vaeserve.training.synthetic import make_shapes
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
EXAMPLES = {
    "Encode": 350,
    "Decode": 300,
    "Sample": 250,
    "SampleStream": 150,
    "GetModelInfo": 100,
    "Interpolate": 250,
    "Edit": 250,
    "ListConcepts": 50,
}
CASES = sum(EXAMPLES.values())
UINT32, UINT64, INT64 = 2**32 - 1, 2**64 - 1, 2**63 - 1
# The fuzzed model's concepts.json: labels 0..4 (make_shapes) and one user vector.
LABELS, USER = ("0", "1", "2", "3", "4"), "bars"


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
def fuzz_repository(tiny_repository, tmp_path_factory) -> Path:
    """The tiny model with a concepts.json built from generated labelled shapes."""
    root = tmp_path_factory.mktemp("fuzz-repo")
    shutil.copytree(tiny_repository / "tiny", root / "tiny")
    x, y = make_shapes(100, height=12, width=12, seed=3)
    np.savez(root / "shapes.npz", x_train=x, y_train=y)
    np.savez(root / "h.npz", images=x[y == 0])
    np.savez(root / "v.npz", images=x[y == 1])
    build_concepts(
        root / "tiny" / "1",
        data=root / "shapes.npz",
        vectors={USER: (root / "h.npz", root / "v.npz")},
    )
    return root


@pytest.fixture(scope="module")
def concepts(fuzz_repository) -> Concepts:
    """What the server loaded (the same reader), to predict Sample's latents near a label."""
    loaded = load_concepts(read_model(fuzz_repository / "tiny" / "1"))
    assert loaded is not None and tuple(loaded.labels) == LABELS and USER in loaded.user
    return loaded


@pytest.fixture(scope="module")
def fuzz_server(fuzz_repository) -> Iterator[ServerThread]:
    with running_server(fuzz_repository, providers="cpu") as srv:
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
    if r.concept and not (r.concept.startswith("label:") and r.concept[6:] in LABELS):
        return Expect(INVALID, "concept: sampling needs a label concept 'label:K'")
    per_image = image_bytes(IMAGE, FORMAT_NAMES[r.format]) + 4 * LATENT
    if not stream and r.n * per_image + MESSAGE_OVERHEAD > MAX_BYTES:
        return Expect(EXHAUSTED, "over max_message_bytes")
    return Expect(OK)


def known_concept(name: str) -> bool:
    """Edit's names: label:K, A-B for any two labels (either way, or the same twice), user's."""
    if name == USER or (name.startswith("label:") and name[6:] in LABELS):
        return True
    return any(name[:i] in LABELS and name[i + 1 :] in LABELS for i in range(len(name)))


def latent_end(x: np.ndarray, field: str) -> Expect | None:
    if x.shape != (1, LATENT):
        return Expect(INVALID, f"{field}: shape {list(x.shape)}, but tiny v1 needs one latent")
    if x.dtype != np.dtype("<f4"):
        return Expect(INVALID, f"{field}: dtype uint8, need float32")
    if not np.isfinite(x).all():
        return Expect(INVALID, f"{field}: values must be finite")
    return None


def pixels(images: list[np.ndarray]) -> Expect | None:
    """The encoder's checks of float pixels (uint8 ones are always in range)."""
    floats = [x for x in images if x.dtype != np.uint8]
    if any(not np.isfinite(x).all() for x in floats):
        return Expect(INVALID, "NaN or infinite")
    if any(x.size and (x.min() < 0 or x.max() > 1) for x in floats):
        return Expect(INVALID, "must be in [0, 1]")
    return None


def response_fits(rows: int, fmt: int) -> Expect | None:
    if rows * (image_bytes(IMAGE, FORMAT_NAMES[fmt]) + 4 * LATENT) + MESSAGE_OVERHEAD > MAX_BYTES:
        return Expect(EXHAUSTED, "over max_message_bytes")
    return None


def expect_interpolate(r: pb.InterpolateRequest) -> Expect:
    early = transport(r) or resolve(r.model, r.version)
    if early:
        return early
    fields = [r.WhichOneof("start"), r.WhichOneof("end")]
    for field in fields:
        if field and (problem := wire(getattr(r, field), field, True)):
            return problem
    if r.method not in (0, 1, 2):
        return Expect(INVALID, f"unknown InterpolationMethod value {r.method}")
    if r.format not in FORMAT_NAMES:
        return Expect(INVALID, f"unknown ImageFormat value {r.format}")
    images = []
    for side, field in zip(("start", "end"), fields, strict=True):
        if field is None:
            return Expect(INVALID, f"{side}: missing (set {side}_latent or {side}_image)")
        x = array(getattr(r, field))
        if field.endswith("latent"):
            if problem := latent_end(x, field):
                return problem
        elif x.shape != (1, *IMAGE):
            return Expect(INVALID, f"{field}: shape {list(x.shape)}, but tiny v1 needs one image")
        else:
            images.append(x)
    if r.steps < 2:
        return Expect(INVALID, f"steps: got {r.steps}, need at least 2")
    if r.steps > MAX_IMAGES:
        return Expect(EXHAUSTED, f"max_images_per_request {MAX_IMAGES}")
    return response_fits(r.steps, r.format) or pixels(images) or Expect(OK)


def expect_edit(r: pb.EditRequest) -> Expect:
    early = transport(r) or resolve(r.model, r.version)
    if early:
        return early
    if problem := wire(r.images, "images", r.HasField("images")):
        return problem
    if r.format not in FORMAT_NAMES:
        return Expect(INVALID, f"unknown ImageFormat value {r.format}")
    if not r.concept:
        return Expect(INVALID, "concept: missing")
    if not known_concept(r.concept):
        return Expect(INVALID, "concept: unknown concept")
    alphas = np.asarray(r.alphas, np.float64)
    if not len(alphas):
        return Expect(INVALID, "alphas: need at least one")
    if len(alphas) > MAX_IMAGES:
        return Expect(EXHAUSTED, f"alphas: {len(alphas)} images is over")
    bad = ~np.isfinite(alphas) | (np.abs(alphas) > 100)
    if bad.any():
        return Expect(INVALID, f"alphas[{int(np.flatnonzero(bad)[0])}] is")
    x = array(r.images)
    if x.ndim == 4 and len(x) >= 1:
        if len(x) * len(alphas) > MAX_IMAGES:
            return Expect(EXHAUSTED, f"images x alphas ({len(x)} x {len(alphas)})")
        if problem := response_fits(len(x) * len(alphas), r.format):
            return problem
    if x.ndim != 4 or x.shape[1:] != IMAGE:
        return Expect(INVALID, "[N, 1, 12, 12]")
    return count(len(x), "images") or pixels([x]) or Expect(OK)


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
    concept=mostly(
        st.just(""),
        st.one_of(
            st.sampled_from([f"label:{k}" for k in LABELS]),
            st.sampled_from(["label:9", "label:", "1-0", USER, "label:0 "]),
            st.text(max_size=20),
        ),
        75,
    ),
)


@st.composite
def single(draw: st.DrawFn, tail: tuple[int, ...]) -> pb.Tensor:
    """One well-formed row, [1, *tail]: mostly float32, values mostly good."""
    dtype = draw(mostly(st.just(pb.DTYPE_FLOAT32), st.just(pb.DTYPE_UINT8), 80))
    kind = draw(mostly(st.sampled_from(["uniform", "zeros"]), st.sampled_from(BAD), 85))
    data = _values(math.prod(tail), dtype, kind, draw(st.integers(0, 2**32 - 1)))
    return pb.Tensor(shape=[1, *tail], dtype=dtype, data=data)


@st.composite
def interpolate_requests(draw: st.DrawFn) -> pb.InterpolateRequest:
    request = pb.InterpolateRequest(
        model=draw(model_names),
        version=draw(versions),
        steps=draw(mostly(st.integers(0, 30), st.integers(0, UINT32), 85)),
        method=draw(mostly(st.sampled_from([0, 1, 2]), st.integers(3, 2**31 - 1), 90)),
        format=draw(formats),
    )
    for side in ("start", "end"):
        kind = draw(mostly(st.sampled_from(["latent", "image"]), st.none(), 95))
        if kind is not None:
            tail = (LATENT,) if kind == "latent" else IMAGE
            tensor = draw(mostly(single(tail), tensors(tail), 80))
            getattr(request, f"{side}_{kind}").CopyFrom(tensor)
    return request


edit_requests = st.builds(
    pb.EditRequest,
    model=model_names,
    version=versions,
    images=mostly(
        mostly(
            st.integers(1, 8).flatmap(lambda n: single(IMAGE).map(lambda t: _rows(t, n))),
            tensors(IMAGE),
            60,
        ),
        st.none(),
        95,
    ),
    concept=mostly(
        st.sampled_from([f"label:{k}" for k in LABELS] + ["1-0", "3-3", "4-2", USER]),
        st.one_of(st.sampled_from(["", "label:9", "9-1", "1-", "bars2"]), st.text(max_size=20)),
        85,
    ),
    alphas=mostly(
        st.lists(st.floats(-5, 5, width=32), min_size=1, max_size=6),
        st.one_of(st.lists(st.floats(width=32), max_size=8), st.lists(st.just(0.5), max_size=120)),
        80,
    ),
    format=formats,
)


def _rows(row: pb.Tensor, n: int) -> pb.Tensor:
    """`row` ([1, ...]) repeated to n rows."""
    return pb.Tensor(shape=[n, *row.shape[1:]], dtype=row.dtype, data=row.data * n)


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
                assert len(reply.encoded) == n and all(
                    p.startswith(b"\x89PNG") for p in reply.encoded
                )
            else:
                assert list(reply.images.shape) == [n, *IMAGE]

    run()
    covered("Decode", seen, {OK, INVALID, NOT_FOUND, EXHAUSTED})


def test_sample(fuzz_stub, concepts):
    seen: Counter[str] = Counter()

    @fuzz_settings("Sample")
    @given(request=sample_requests)
    def run(request: pb.SampleRequest) -> None:
        reply = check(
            seen, expect_sample(request, False), lambda: fuzz_stub.Sample(request, timeout=30)
        )
        if reply is not None:
            _check_sampled(request, [reply], concepts)

    run()
    covered("Sample", seen, {OK, INVALID, NOT_FOUND, EXHAUSTED})


def test_sample_stream(fuzz_stub, concepts):
    seen: Counter[str] = Counter()

    @fuzz_settings("SampleStream")
    @given(request=sample_requests)
    def run(request: pb.SampleRequest) -> None:
        expect = expect_sample(request, True)
        replies = check(seen, expect, lambda: list(fuzz_stub.SampleStream(request, timeout=60)))
        if replies is not None:
            assert isinstance(replies, list)
            _check_sampled(request, replies, concepts)

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


def test_interpolate(fuzz_stub):
    seen: Counter[str] = Counter()

    @fuzz_settings("Interpolate")
    @given(request=interpolate_requests())
    def run(request: pb.InterpolateRequest) -> None:
        expect = expect_interpolate(request)
        reply = check(seen, expect, lambda: fuzz_stub.Interpolate(request, timeout=30))
        if reply is not None:
            latents = to_array(reply.latents, "latents")
            assert latents.shape == (request.steps, LATENT) and np.isfinite(latents).all()
            for row, side in ((0, "start"), (-1, "end")):
                if request.WhichOneof(side) == f"{side}_latent":
                    given_ = to_array(getattr(request, f"{side}_latent"), side)[0]
                    np.testing.assert_array_equal(latents[row], given_)
            _check_images(request.format, reply, request.steps)

    run()
    covered("Interpolate", seen, {OK, INVALID, NOT_FOUND, EXHAUSTED})


def test_edit(fuzz_stub, concepts):
    seen: Counter[str] = Counter()

    @fuzz_settings("Edit")
    @given(request=edit_requests)
    def run(request: pb.EditRequest) -> None:
        reply = check(seen, expect_edit(request), lambda: fuzz_stub.Edit(request, timeout=30))
        if reply is not None:
            n, alphas = request.images.shape[0], np.asarray(request.alphas, np.float64)
            latents = to_array(reply.latents, "latents").reshape(n, len(alphas), LATENT)
            v = concepts.vector(request.concept).vector
            moved = latents.astype(np.float64) - latents[:, :1]  # each image's first edit
            steps = np.broadcast_to((alphas - alphas[0])[None, :, None] * v, moved.shape)
            np.testing.assert_allclose(moved, steps, atol=1e-4)
            _check_images(request.format, reply, n * len(alphas))

    run()
    covered("Edit", seen, {OK, INVALID, NOT_FOUND, EXHAUSTED})


def test_list_concepts(fuzz_stub):
    seen: Counter[str] = Counter()

    @fuzz_settings("ListConcepts")
    @given(
        request=st.builds(
            pb.ListConceptsRequest,
            model=mostly(st.sampled_from(["", "tiny"]), BAD_NAMES, 60),
            version=versions,
        )
    )
    def run(request: pb.ListConceptsRequest) -> None:
        expect = transport(request) or resolve(request.model, request.version) or Expect(OK)
        reply = check(seen, expect, lambda: fuzz_stub.ListConcepts(request, timeout=30))
        if reply is not None:
            assert [c.label for c in reply.labels] == list(LABELS)
            assert len(reply.vectors) == len(LABELS) ** 2 + 1 and reply.vectors[-1].name == USER

    run()
    covered("ListConcepts", seen, {OK, NOT_FOUND, EXHAUSTED})


def _check_images(fmt: int, reply: pb.InterpolateResponse | pb.EditResponse, rows: int) -> None:
    if fmt == pb.IMAGE_FORMAT_PNG:
        assert len(reply.encoded) == rows and all(p.startswith(b"\x89PNG") for p in reply.encoded)
    else:
        assert list(reply.images.shape) == [rows, *IMAGE]


def _check_sampled(
    request: pb.SampleRequest, replies: list[pb.SampleResponse], concepts: Concepts
) -> None:
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
        if request.concept:
            label = concepts.label(request.concept)
            expected = latent.around(label.mean, label.factor, expected, temperature)
        elif temperature != 1.0:
            expected = expected * np.float32(temperature)
        np.testing.assert_array_equal(latents, expected)
        images = (
            len(reply.encoded) if request.format == pb.IMAGE_FORMAT_PNG else reply.images.shape[0]
        )
        assert images == rows
        offset += rows
    assert offset - request.offset == request.n
