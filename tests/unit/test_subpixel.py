"""The decoder's sub-pixel rewrite: the same function as ConvTranspose -> Relu -> Conv, weights
that can be turned back exactly, and graphs without the pattern left alone."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from vaeserve.export.subpixel import plain_initializers, rewrite_decoder
from vaeserve.service.repository import ModelRepository


def upsampling_graph(
    c_in: int, c_mid: int, c_out: int, size: int, seed: int = 0, **transpose: object
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x [N, c_in, size, size] -> ConvTranspose(3x3, s2) -> Relu -> Conv(3x3) -> Sigmoid."""
    rng = np.random.default_rng(seed)
    weights = {
        "up.weight": rng.standard_normal((c_in, c_mid, 3, 3)).astype(np.float32),
        "up.bias": rng.standard_normal(c_mid).astype(np.float32),
        "out.weight": rng.standard_normal((c_out, c_mid, 3, 3)).astype(np.float32),
        "out.bias": rng.standard_normal(c_out).astype(np.float32),
    }
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1], **transpose}
    nodes = [
        helper.make_node(
            "ConvTranspose", ["x", "up.weight", "up.bias"], ["up"], kernel_shape=[3, 3], **attrs
        ),
        helper.make_node("Relu", ["up"], ["relu"]),
        helper.make_node(
            "Conv", ["relu", "out.weight", "out.bias"], ["conv"], kernel_shape=[3, 3], pads=[1] * 4
        ),
        helper.make_node("Sigmoid", ["conv"], ["image"]),
    ]
    graph = helper.make_graph(
        nodes,
        "upsampling",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", c_in, size, size])],
        [
            helper.make_tensor_value_info(
                "image", onnx.TensorProto.FLOAT, ["N", c_out, 2 * size, 2 * size]
            )
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model, weights


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(
    ("c_in", "c_mid", "c_out", "size"), [(64, 32, 1, 14), (8, 5, 3, 7), (3, 4, 2, 1)]
)
def test_rewrite_computes_the_same_function(c_in, c_mid, c_out, size):
    model, _ = upsampling_graph(c_in, c_mid, c_out, size)
    x = np.random.default_rng(1).standard_normal((5, c_in, size, size)).astype(np.float32)
    before = run(model, x)
    assert rewrite_decoder(model)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Conv", "Relu", "Conv", "DepthToSpace", "Sigmoid"]
    after = run(model, x)
    assert after.shape == before.shape == (5, c_out, 2 * size, 2 * size)
    np.testing.assert_allclose(after, before, atol=2e-5, rtol=0)
    # and a batch of one, where the phases meet the padding at every edge
    np.testing.assert_allclose(run(model, x[:1]), before[:1], atol=2e-5, rtol=0)


def test_plain_initializers_give_back_the_original_weights_exactly():
    model, weights = upsampling_graph(6, 4, 3, 5, seed=2)
    assert rewrite_decoder(model)
    assert not {i.name for i in model.graph.initializer} & set(weights)
    plain = plain_initializers(model.graph)
    assert set(plain) == set(weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(plain[name], array)


@pytest.mark.parametrize(
    "transpose",
    [{"output_padding": [0, 0]}, {"pads": [0, 0, 0, 0]}, {"strides": [1, 1]}],
    ids=["odd-output", "no-padding", "stride-1"],
)
def test_other_upsamplings_are_left_alone(transpose):
    if transpose.get("strides") == [1, 1]:
        transpose = {**transpose, "output_padding": [0, 0]}
    model, _ = upsampling_graph(4, 3, 1, 6, **transpose)
    before = model.SerializeToString()
    assert not rewrite_decoder(model)
    assert model.SerializeToString() == before


def test_exported_decoders_are_rewritten_and_still_match(tiny_repository):
    spec = ModelRepository(tiny_repository).scan().resolve()
    assert spec.meta["exporter"]["decoder_rewrite"] == "subpixel"
    ops = {n.op_type for n in onnx.load(str(spec.graph_path("decoder"))).graph.node}
    assert "DepthToSpace" in ops and "ConvTranspose" not in ops
    # the exporter's parity check against PyTorch ran on the rewritten graph, every batch size
    parity = spec.meta["parity"]
    assert {key.split("@")[1] for key in parity["decoder"]} == {"1", "3", "64"}
    assert 0 < parity["decoder_max_abs_diff"] <= parity["tolerance"]


def chained_graph(
    widths: tuple[int, ...], c_out: int, size: int, paddings: tuple[int, ...], seed: int = 0
) -> tuple[onnx.ModelProto, dict[str, np.ndarray], int]:
    """A deeper decoder's tail: ConvTranspose(3x3, s2) -> Relu per stage (output_padding from
    `paddings`), then Conv(3x3) -> Sigmoid. Returns (model, weights, output size)."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    nodes, current, out_size = [], "x", size
    for i, (c_in, c_mid) in enumerate(itertools.pairwise(widths)):
        weights[f"up{i}.weight"] = rng.standard_normal((c_in, c_mid, 3, 3)).astype(np.float32)
        weights[f"up{i}.bias"] = rng.standard_normal(c_mid).astype(np.float32)
        pad = paddings[i]
        nodes += [
            helper.make_node(
                "ConvTranspose",
                [current, f"up{i}.weight", f"up{i}.bias"],
                [f"up{i}"],
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
                output_padding=[pad, pad],
            ),
            helper.make_node("Relu", [f"up{i}"], [f"relu{i}"]),
        ]
        current, out_size = f"relu{i}", 2 * out_size - 1 + pad
    weights["out.weight"] = rng.standard_normal((c_out, widths[-1], 3, 3)).astype(np.float32)
    weights["out.bias"] = rng.standard_normal(c_out).astype(np.float32)
    nodes += [
        helper.make_node(
            "Conv", [current, "out.weight", "out.bias"], ["conv"], kernel_shape=[3, 3], pads=[1] * 4
        ),
        helper.make_node("Sigmoid", ["conv"], ["image"]),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", widths[0], size, size])],
        [
            helper.make_tensor_value_info(
                "image", onnx.TensorProto.FLOAT, ["N", c_out, out_size, out_size]
            )
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model, weights, out_size


def test_every_stage_of_a_deeper_decoder_is_rewritten():
    model, weights, out = chained_graph((16, 8, 6, 4), 3, 4, paddings=(1, 1, 1))
    x = np.random.default_rng(3).standard_normal((3, 16, 4, 4)).astype(np.float32)
    before = run(model, x)
    assert rewrite_decoder(model) == 3
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 3
    new_names = [n.name for n in model.graph.node if n.name.startswith("subpixel")]
    assert len(set(new_names)) == len(new_names) == 2 * 2 + 4  # 2 standalone, 1 fused
    after = run(model, x)
    assert after.shape == before.shape == (3, 3, out, out) == (3, 3, 32, 32)
    np.testing.assert_allclose(after, before, atol=5e-5, rtol=0)
    plain = plain_initializers(model.graph)
    assert set(plain) == set(weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(plain[name], array)


def test_an_odd_stage_is_left_alone_and_the_others_rewritten():
    model, _, out = chained_graph((6, 5, 4), 1, 4, paddings=(0, 1))  # 4 -> 7 (odd) -> 14
    x = np.random.default_rng(4).standard_normal((2, 6, 4, 4)).astype(np.float32)
    before = run(model, x)
    assert rewrite_decoder(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("ConvTranspose") == 1 and ops.count("DepthToSpace") == 1
    np.testing.assert_allclose(run(model, x), before, atol=5e-5, rtol=0)
    assert before.shape == (2, 1, out, out) == (2, 1, 14, 14)
