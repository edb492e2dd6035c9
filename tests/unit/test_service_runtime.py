"""The GPU path's knobs, checked where they can be on a CPU: provider options, batch buckets,
I/O binding and padding (same answers as a plain run), float16 variants, and the fallback
report when a GPU provider was asked for but is not active."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import save_untrained_checkpoint
from vaeserve.export.onnx_export import export_model
from vaeserve.service.config import Settings
from vaeserve.service.errors import StartupError
from vaeserve.service.repository import RepositoryError, read_model
from vaeserve.service.runtime import (
    CPU,
    CUDA,
    TENSORRT,
    batch_buckets,
    load_runtime,
    provider_list,
)


def on(providers: str = "cpu", **knobs: object) -> Settings:
    """Settings for one session thread on `providers`, with the knobs under test."""
    return Settings(providers=providers, threads=1, **knobs)


@pytest.fixture(scope="module")
def fp16_spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp16repo")
    ckpt = save_untrained_checkpoint(root.parent / f"{root.name}.pt", latent_dim=4)
    export_model(ckpt, root, "half", 1, batch_sizes=(1, 5), fp16=True)
    return read_model(root / "half" / "1")


def test_provider_options():
    options = Settings(
        cuda_device_id=1, gpu_mem_limit_mb=512, arena_extend_strategy="kSameAsRequested"
    )
    (cuda, cuda_opts), cpu = provider_list([CUDA, CPU], options)
    assert (cuda, cpu) == (CUDA, CPU)
    assert cuda_opts == {
        "device_id": "1",
        "cudnn_conv_algo_search": "HEURISTIC",
        "arena_extend_strategy": "kSameAsRequested",
        "gpu_mem_limit": str(512 * 1024 * 1024),
    }
    assert provider_list([CPU]) == [CPU]
    trt = provider_list([CUDA, CPU], Settings(tensorrt=True, tensorrt_cache_dir="/c"))
    assert [p[0] if isinstance(p, tuple) else p for p in trt] == [TENSORRT, CUDA, CPU]
    assert trt[0][1]["trt_engine_cache_enable"] == "True"
    assert trt[0][1]["trt_engine_cache_path"] == "/c"
    # TensorRT only ever comes with CUDA: asking for the CPU alone never adds it
    assert provider_list([CPU], Settings(tensorrt=True)) == [CPU]


def test_batch_buckets():
    assert batch_buckets(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert batch_buckets(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert batch_buckets(1) == [1]


def test_io_binding_and_padded_buckets_give_the_plain_answers(tiny_repository):
    spec = read_model(tiny_repository / "tiny" / "1")
    plain = load_runtime(spec, on(max_batch_size=32))
    bound = load_runtime(spec, on(max_batch_size=32, io_binding="on", buckets="on"))
    assert plain.decoder.io_binding is False and plain.decoder.buckets is None  # auto on CPU
    assert bound.decoder.io_binding is True and bound.decoder.buckets == [1, 2, 4, 8, 16, 32]
    rng = np.random.default_rng(0)
    for n in (1, 3, 7, 32):
        z = rng.standard_normal((n, 3)).astype(np.float32)
        images = rng.random((n, 1, 12, 12), dtype=np.float32)
        for a, b in zip(plain.decoder.run(z), bound.decoder.run(z), strict=True):
            assert b.shape == a.shape
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
        for a, b in zip(plain.encoder.run(images), bound.encoder.run(images), strict=True):
            assert b.shape == a.shape
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)


def test_fp16_variants_are_served_when_asked_for(fp16_spec):
    full = load_runtime(fp16_spec, on())
    half = load_runtime(fp16_spec, on(fp16=True))
    assert (full.precision, half.precision) == ("fp32", "fp16")
    assert half.decoder.path.name == "decoder.fp16.onnx"
    assert half.decoder.sha256 == fp16_spec.meta["variants"]["decoder_fp16"]["sha256"]
    z = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    np.testing.assert_allclose(half.decoder.run(z)[0], full.decoder.run(z)[0], atol=5e-3)


def test_fp16_without_variant_or_with_a_bad_one_is_a_clear_error(tiny_repository, fp16_spec):
    spec = read_model(tiny_repository / "tiny" / "1")
    with pytest.raises(RepositoryError, match=r"has no encoder_fp16 \(export it with"):
        load_runtime(spec, on(fp16=True))
    path = fp16_spec.graph_path("decoder", "decoder_fp16")
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(RepositoryError, match=r"decoder\.fp16\.onnx: sha256 does not match"):
            load_runtime(fp16_spec, on(fp16=True))
    finally:
        path.write_bytes(original)


def test_gpu_asked_for_without_one(tiny_repository, caplog):
    spec = read_model(tiny_repository / "tiny" / "1")
    runtime = load_runtime(spec, on("cuda,cpu", tensorrt=True))
    if runtime.on_gpu:
        pytest.skip("a GPU is active here: the fallback cannot be shown")
    assert runtime.gpu_fallback and runtime.providers == [CPU]
    assert "CUDA was requested but ONNX Runtime runs on" in caplog.text
    assert "TensorRT was requested but is not active" in caplog.text
    with pytest.raises(StartupError, match="--require-gpu makes this fatal"):
        load_runtime(spec, on("cuda,cpu", require_gpu=True))


@pytest.mark.gpu
def test_cuda_session_matches_cpu(tiny_repository):
    spec = read_model(tiny_repository / "tiny" / "1")
    gpu = load_runtime(spec, on("cuda,cpu", require_gpu=True, max_batch_size=64))
    cpu = load_runtime(spec, on())
    assert CUDA in gpu.providers and gpu.decoder.io_binding and gpu.decoder.buckets
    z = np.random.default_rng(2).standard_normal((37, 3)).astype(np.float32)
    np.testing.assert_allclose(gpu.decoder.run(z)[0], cpu.decoder.run(z)[0], atol=1e-4)
