"""tritonclient (NVIDIA's KServe V2 client) against a real vaeserve: health, metadata, ModelInfer
on the encoder and decoder with Encode/Decode's numbers, and the status codes of bad requests.

tritonclient needs protobuf 6 and the main venv has protobuf 7, so the client half of this file
runs as a script under its own venv: `.venv-clients` (tests/clients/requirements.txt, made by
`make test`), else the peers' `.venv-peers`. Outside CI the test skips, saying so, where neither
has tritonclient; in CI (CI set) that is a failure, never a silent skip. Only the standard
library and numpy are imported at the top: every venv has them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CLIENT_PYTHONS = [ROOT / venv / "bin" / "python" for venv in (".venv-clients", ".venv-peers")]


def client_python() -> Path | None:
    """The first venv whose python imports tritonclient.grpc."""
    for python in CLIENT_PYTHONS:
        if python.is_file():
            probe = subprocess.run([str(python), "-c", "import tritonclient.grpc"], check=False)
            if probe.returncode == 0:
                return python
    return None


C, H, W, L = 1, 12, 12, 3  # the `tiny` model


def test_tritonclient_against_vaeserve(server: Any, stub: Any, tmp_path: Path) -> None:
    import pytest

    from vaeserve.service.grpc.tensors import to_array, to_tensor
    from vaeserve.v1 import vae_pb2 as pb

    python = client_python()
    if python is None:
        why = f"no venv with tritonclient[grpc] among {[str(p) for p in CLIENT_PYTHONS]}"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; `make test` makes .venv-clients")
        pytest.skip(f"{why}: run `make clients-venv`")
    rng = np.random.default_rng(5)
    x = rng.random((4, C, H, W), dtype=np.float32)
    x8 = (x * 255).astype(np.uint8)
    z = rng.standard_normal((6, L), dtype=np.float32)
    encoded = stub.Encode(pb.EncodeRequest(images=to_tensor(x)), timeout=10)
    encoded8 = stub.Encode(pb.EncodeRequest(images=to_tensor(x8)), timeout=10)
    decoded = stub.Decode(pb.DecodeRequest(latents=to_tensor(z)), timeout=10)
    data = tmp_path / "vectors.npz"
    np.savez(
        data,
        x=x,
        x8=x8,
        z=z,
        z_mean=to_array(encoded.z_mean, "z_mean"),
        z_log_var=to_array(encoded.z_log_var, "z_log_var"),
        z_mean8=to_array(encoded8.z_mean, "z_mean"),
        images=to_array(decoded.images, "images"),
    )
    result = subprocess.run(
        [str(python), __file__, server.target, str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["health"] == {
        "live": True,
        "ready": True,
        "encoder": True,
        "decoder v1": True,
        "decoder v2": False,
        "unknown": False,
    }
    assert report["metadata"] == {
        "name": "tiny-decoder",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [["z", "FP32", ["-1", str(L)]]],
        "outputs": [["image", "FP32", ["-1", str(C), str(H), str(W)]]],
    }
    fp32 = 11  # Triton's TYPE_FP32
    assert report["config"] == {
        "max_batch_size": 100,
        "input": [["z", fp32, [L]]],
        "output": [["image", fp32, [C, H, W]]],
    }
    assert report["equal"] == {
        "z_mean": True,
        "z_log_var": True,
        "z_mean uint8": True,
        "images": True,
    }
    assert report["bad"] == {
        "unknown model": "StatusCode.NOT_FOUND",
        "unknown version": "StatusCode.NOT_FOUND",
        "wrong input name": "StatusCode.INVALID_ARGUMENT",
        "wrong datatype": "StatusCode.INVALID_ARGUMENT",
        "wrong shape": "StatusCode.INVALID_ARGUMENT",
        "unknown output": "StatusCode.INVALID_ARGUMENT",
    }


# --- the client half: run under .venv-peers/bin/python -------------------------------------


def _client_checks(target: str, data: Path) -> dict[str, Any]:
    """Every check through tritonclient; returns plain values for the test to compare."""
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    v = np.load(data)
    client = tc.InferenceServerClient(target)

    def infer(model: str, name: str, array: np.ndarray, datatype: str, **kw: Any) -> Any:
        tensor = tc.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return client.infer(model, [tensor], **kw)

    def code(call: Any) -> str:
        try:
            call()
        except InferenceServerException as exc:
            return str(exc.status())
        return "OK"

    meta = client.get_model_metadata("tiny-decoder")
    config = client.get_model_config("tiny-decoder").config
    enc = infer("tiny-encoder", "image", v["x"], "FP32")
    enc8 = infer("tiny-encoder", "image", v["x8"], "UINT8", model_version="1")
    dec = infer("decoder", "z", v["z"], "FP32")
    z = v["z"]
    return {
        "health": {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "encoder": client.is_model_ready("tiny-encoder"),
            "decoder v1": client.is_model_ready("tiny-decoder", "1"),
            "decoder v2": client.is_model_ready("tiny-decoder", "2"),
            "unknown": client.is_model_ready("nope-decoder"),
        },
        "metadata": {
            "name": meta.name,
            "versions": list(meta.versions),
            "platform": meta.platform,
            "inputs": [[t.name, t.datatype, [str(d) for d in t.shape]] for t in meta.inputs],
            "outputs": [[t.name, t.datatype, [str(d) for d in t.shape]] for t in meta.outputs],
        },
        "config": {
            "max_batch_size": config.max_batch_size,
            "input": [[i.name, int(i.data_type), list(i.dims)] for i in config.input],
            "output": [[o.name, int(o.data_type), list(o.dims)] for o in config.output],
        },
        "equal": {
            "z_mean": bool(np.array_equal(enc.as_numpy("z_mean"), v["z_mean"])),
            "z_log_var": bool(np.array_equal(enc.as_numpy("z_log_var"), v["z_log_var"])),
            "z_mean uint8": bool(np.array_equal(enc8.as_numpy("z_mean"), v["z_mean8"])),
            "images": bool(np.array_equal(dec.as_numpy("image"), v["images"])),
        },
        "bad": {
            "unknown model": code(lambda: infer("nope-decoder", "z", z, "FP32")),
            "unknown version": code(
                lambda: infer("tiny-decoder", "z", z, "FP32", model_version="9")
            ),
            "wrong input name": code(lambda: infer("tiny-decoder", "latents", z, "FP32")),
            "wrong datatype": code(
                lambda: infer("tiny-decoder", "z", z.astype(np.float64), "FP64")
            ),
            "wrong shape": code(lambda: infer("tiny-decoder", "z", z[:, :2].copy(), "FP32")),
            "unknown output": code(
                lambda: infer(
                    "tiny-decoder", "z", z, "FP32", outputs=[tc.InferRequestedOutput("logits")]
                )
            ),
        },
    }


if __name__ == "__main__":
    print(json.dumps(_client_checks(sys.argv[1], Path(sys.argv[2]))))
