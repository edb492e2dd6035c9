"""Rewrite the decoder's upsampling into sub-pixel form: the same function, faster on ONNX Runtime.

The decoder ends ConvTranspose(3x3, stride 2) -> Relu -> Conv(3x3) -> Sigmoid. ONNX Runtime's
CPU ConvTranspose is a GEMM plus col2im and took about two thirds of the decoder's time, and its
output then goes through the layout reorders of the final one-channel Conv (profiled in
docs/performance-analysis.md). An exact equivalent works on the 2x-coarser grid instead:

- each of the four output phases (row parity a, column parity b) of a stride-2 transposed
  convolution is an ordinary convolution of the input with a 2x2 slice of the kernel, so the
  ConvTranspose becomes one Conv with 4 * C_mid output channels (phase-major);
- Relu is elementwise, so it commutes with the phase split;
- the final 3x3 Conv over the fine grid reads, for each fine pixel, fine neighbours that sit in
  known phases of coarse pixels at offsets -1..1, so it becomes one 3x3 Conv from the 4 * C_mid
  phase channels to 4 * C_out phase channels;
- DepthToSpace (DCR) interleaves the 4 * C_out phases back into the [N, C_out, 2H, 2W] image.

Deeper decoders (ModelConfig.stages) chain several stride-2 ConvTransposes: the last one, before
the final Conv, is fused as above; each earlier one becomes the 2x2 Conv to phases followed by
DepthToSpace on its own (a ConvTranspose is exactly that; the Relu after it stays elementwise).

Only the summation order changes: outputs agree to float32 rounding (about 2e-6 on the MNIST
model), and the exporter's parity check against PyTorch still guards every export. Upsamplings
without this exact form (another stride or padding, an odd output size) are left as they are.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Kernel tap of a stride-2, pad-1, 3-tap transposed convolution that lands on output phase p
# from the input at offset d (0: same coarse index, 1: the next one); None where no tap does.
_TAP: dict[tuple[int, int], int | None] = {(0, 0): 1, (0, 1): None, (1, 0): 2, (1, 1): 0}
UP, OUT = ".subpixel_up", ".subpixel_out"  # suffixes of the rewritten initializers' names


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _is_upsampling(node: onnx.NodeProto) -> bool:
    a = _attrs(node)
    return (
        node.op_type == "ConvTranspose"
        and list(a.get("strides", [])) == [2, 2]
        and list(a.get("kernel_shape", [])) == [3, 3]
        and list(a.get("pads", [])) == [1, 1, 1, 1]
        and list(a.get("output_padding", [])) == [1, 1]
        and list(a.get("dilations", [1, 1])) == [1, 1]
        and a.get("group", 1) == 1
        and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        and len(node.input) in (2, 3)
    )


def _is_same_conv3(node: onnx.NodeProto) -> bool:
    a = _attrs(node)
    return (
        node.op_type == "Conv"
        and list(a.get("kernel_shape", [])) == [3, 3]
        and list(a.get("pads", [])) == [1, 1, 1, 1]
        and list(a.get("strides", [1, 1])) == [1, 1]
        and list(a.get("dilations", [1, 1])) == [1, 1]
        and a.get("group", 1) == 1
        and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        and len(node.input) in (2, 3)
    )


def up_kernel(w_up: np.ndarray) -> np.ndarray:
    """The ConvTranspose [C_in, C_mid, 3, 3] as a 2x2 Conv to the four output phases,
    [4 * C_mid, C_in, 2, 2]; phase p = 2a + b, channels phase-major (p * C + c), as DepthToSpace
    DCR reads them."""
    c_in, c_mid = w_up.shape[:2]
    k_up = np.zeros((4 * c_mid, c_in, 2, 2), np.float64)
    for a in (0, 1):
        for b in (0, 1):
            p = 2 * a + b
            for di in (0, 1):
                for dj in (0, 1):
                    ki, kj = _TAP[(a, di)], _TAP[(b, dj)]
                    if ki is not None and kj is not None:
                        k_up[p * c_mid : (p + 1) * c_mid, :, di, dj] = w_up[:, :, ki, kj].T
    return k_up.astype(np.float32)


def phase_kernels(
    w_up: np.ndarray, b_up: np.ndarray, w_out: np.ndarray, b_out: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weights of the coarse-grid pair (2x2 Conv to phases, 3x3 Conv between phases).

    w_up: ConvTranspose weight [C_in, C_mid, 3, 3]; w_out: Conv weight [C_out, C_mid, 3, 3].
    """
    c_mid = w_up.shape[1]
    c_out = w_out.shape[0]
    k_out = np.zeros((4 * c_out, 4 * c_mid, 3, 3), np.float64)
    for a in (0, 1):
        for b in (0, 1):
            p = 2 * a + b
            # Fine neighbour (2i + a + u, 2j + b + v) lies in phase ((a+u)%2, (b+v)%2) of the
            # coarse pixel (i + (a+u)//2, j + (b+v)//2).
            for u in (-1, 0, 1):
                for v in (-1, 0, 1):
                    q = 2 * ((a + u) % 2) + (b + v) % 2
                    di, dj = (a + u) // 2 + 1, (b + v) // 2 + 1
                    k_out[p * c_out : (p + 1) * c_out, q * c_mid : (q + 1) * c_mid, di, dj] += (
                        w_out[:, :, u + 1, v + 1]
                    )
    return (
        up_kernel(w_up),
        np.tile(b_up, 4).astype(np.float32),
        k_out.astype(np.float32),
        np.tile(b_out, 4).astype(np.float32),
    )


def _weight_and_bias(
    node: onnx.NodeProto, weights: dict[str, onnx.TensorProto], out_axis: int
) -> tuple[np.ndarray, tuple[str, np.ndarray]]:
    """A (Transpose)Conv's kernel and (bias name, bias). The ONNX optimizer drops an all-zero
    bias input (a freshly initialised model has them): it is zeros, named as the parameter it
    stands for ("net.3.weight" -> "net.3.bias") so plain_initializers() gives it back."""
    kernel = numpy_helper.to_array(weights[node.input[1]])
    if len(node.input) > 2 and node.input[2]:
        return kernel, (node.input[2], numpy_helper.to_array(weights[node.input[2]]))
    name = node.input[1].removesuffix("weight") + "bias"
    return kernel, (name, np.zeros(kernel.shape[out_axis], kernel.dtype))


def rewrite_decoder(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every ConvTranspose -> Relu -> Conv into the fused sub-pixel form, then
    every other matching ConvTranspose into Conv + DepthToSpace; returns how many upsamplings
    were rewritten (0: the model is untouched)."""
    count = 0
    while _rewrite_one(model, fused=True):
        count += 1
    while _rewrite_one(model, fused=False):
        count += 1
    return count


def _rewrite_one(model: onnx.ModelProto, *, fused: bool) -> bool:
    """Rewrite the first upsampling of the requested form; False when there is none."""
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    tag = f"subpixel{sum(n.op_type == 'DepthToSpace' for n in graph.node)}"
    for up in graph.node:
        if not _is_upsampling(up) or not all(n in weights for n in up.input[1:] if n):
            continue
        w_up, bias_up = _weight_and_bias(up, weights, out_axis=1)
        if not fused:
            replaced = [up]
            names = [f"{up.input[1]}{UP}", f"{bias_up[0]}{UP}"]
            arrays = [up_kernel(w_up), np.tile(bias_up[1], 4).astype(np.float32)]
            new_nodes = [
                helper.make_node(
                    "Conv",
                    [up.input[0], *names],
                    [f"{tag}.phases"],
                    name=f"{tag}_up",
                    kernel_shape=[2, 2],
                    pads=[0, 0, 1, 1],
                ),
                helper.make_node(
                    "DepthToSpace",
                    [f"{tag}.phases"],
                    [up.output[0]],
                    name=f"{tag}_interleave",
                    blocksize=2,
                    mode="DCR",
                ),
            ]
        else:
            after = users.get(up.output[0], [])
            if len(after) != 1 or after[0].op_type != "Relu":
                continue
            relu = after[0]
            after = users.get(relu.output[0], [])
            if len(after) != 1 or not _is_same_conv3(after[0]):
                continue
            conv = after[0]
            if not all(n in weights for n in conv.input[1:] if n):
                continue
            replaced = [up, relu, conv]
            w_out, bias_out = _weight_and_bias(conv, weights, out_axis=0)
            arrays = list(phase_kernels(w_up, bias_up[1], w_out, bias_out[1]))
            # Named after the parameters they replace, so plain_initializers() can undo it.
            names = [f"{up.input[1]}{UP}", f"{bias_up[0]}{UP}"]
            names += [f"{conv.input[1]}{OUT}", f"{bias_out[0]}{OUT}"]
            phases, relu_out, out_phases = f"{tag}.phases", f"{tag}.relu", f"{tag}.out"
            new_nodes = [
                helper.make_node(
                    "Conv",
                    [up.input[0], names[0], names[1]],
                    [phases],
                    name=f"{tag}_up",
                    kernel_shape=[2, 2],
                    pads=[0, 0, 1, 1],
                ),
                helper.make_node("Relu", [phases], [relu_out], name=f"{tag}_relu"),
                helper.make_node(
                    "Conv",
                    [relu_out, names[2], names[3]],
                    [out_phases],
                    name=f"{tag}_out",
                    kernel_shape=[3, 3],
                    pads=[1, 1, 1, 1],
                ),
                helper.make_node(
                    "DepthToSpace",
                    [out_phases],
                    [conv.output[0]],
                    name=f"{tag}_interleave",
                    blocksize=2,
                    mode="DCR",
                ),
            ]
        _splice(graph, up, replaced, new_nodes, dict(zip(names, arrays, strict=True)))
        return True
    return False


def _splice(
    graph: onnx.GraphProto,
    at: onnx.NodeProto,
    replaced: list[onnx.NodeProto],
    new_nodes: list[onnx.NodeProto],
    initializers: dict[str, np.ndarray],
) -> None:
    """Put `new_nodes` where `at` was, drop `replaced` and the initializers no node reads any
    more, and add `initializers`."""
    old = {id(n) for n in replaced}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) == id(at):
            nodes.extend(new_nodes)
        elif id(node) not in old:
            nodes.append(node)
    used = {name for node in nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in initializers.items())


def plain_initializers(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every initializer by its original parameter name, with the sub-pixel kernels turned back
    into the ConvTranspose and Conv weights they came from (each original tap appears exactly
    once in them), so a rewritten graph still yields the PyTorch model's state."""
    plain: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if init.name.endswith(UP) and array.ndim == 4:
            c_mid = array.shape[0] // 4
            w = np.zeros((array.shape[1], c_mid, 3, 3), array.dtype)
            for (a, di), ki in _TAP.items():
                for (b, dj), kj in _TAP.items():
                    if ki is not None and kj is not None:
                        p = 2 * a + b
                        w[:, :, ki, kj] = array[p * c_mid : (p + 1) * c_mid, :, di, dj].T
            plain[init.name[: -len(UP)]] = w
        elif init.name.endswith(OUT) and array.ndim == 4:
            c_out, c_mid = array.shape[0] // 4, array.shape[1] // 4
            w = np.zeros((c_out, c_mid, 3, 3), array.dtype)
            for u in (-1, 0, 1):
                for v in (-1, 0, 1):  # phase 0's row of the kernel holds each tap once
                    q, di, dj = 2 * (u % 2) + v % 2, u // 2 + 1, v // 2 + 1
                    w[:, :, u + 1, v + 1] = array[:c_out, q * c_mid : (q + 1) * c_mid, di, dj]
            plain[init.name[: -len(OUT)]] = w
        elif init.name.endswith((UP, OUT)):  # a bias, tiled once per phase
            suffix = UP if init.name.endswith(UP) else OUT
            plain[init.name[: -len(suffix)]] = array[: len(array) // 4].copy()
        else:
            plain[init.name] = array
    return plain
