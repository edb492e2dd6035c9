"""`vaeserve serve` as a real process with torch unimportable (the serve extra has no torch):
graceful shutdown on SIGTERM, and `vaeserve generate` against it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from vaeserve.service.grpc.tensors import to_array
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import serve_process

pytestmark = pytest.mark.slow
READY = health_pb2.HealthCheckRequest(service="vaeserve.v1.VaeService")
LIVE = health_pb2.HealthCheckRequest(service="")


def status(health: health_pb2_grpc.HealthStub, request=READY) -> str:
    reply = health.Check(request, timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_sigterm_drains_in_flight_requests_then_exits(tiny_repository, tmp_path):
    # Batches wait 1.5 s for company (always, not only when the last batch was as big), so the
    # requests are still in flight when SIGTERM arrives.
    flags = ("--max-delay-ms", "1500", "--batch-wait-when-idle")
    with serve_process(tiny_repository, tmp_path, *flags) as srv:
        with grpc.insecure_channel(srv.target) as ch:
            stub, health = vae_pb2_grpc.VaeServiceStub(ch), health_pb2_grpc.HealthStub(ch)
            assert status(health) == "SERVING" and status(health, LIVE) == "SERVING"
            pending = [
                stub.Sample.future(pb.SampleRequest(n=i + 1, seed=i), timeout=30) for i in range(8)
            ]
            time.sleep(0.3)  # the requests reach the server and wait in the batcher
            srv.process.send_signal(signal.SIGTERM)
            seen = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "NOT_SERVING" not in seen:
                seen.append(status(health))
            assert "NOT_SERVING" in seen
            with pytest.raises(grpc.RpcError) as err:  # new work is turned away meanwhile
                stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            for i, future in enumerate(pending):  # ... but every in-flight request completes
                assert to_array(future.result().images, "images").shape == (i + 1, 1, 12, 12)
        assert srv.process.wait(30) == 0
    log = srv.log.read_text()
    assert "received SIGTERM" in log and "draining" in log and "stopped" in log
    assert "Traceback" not in log


def test_generate_2000_pngs_and_a_contact_sheet(tiny_repository, tmp_path):
    out = tmp_path / "out"
    with serve_process(tiny_repository, tmp_path) as srv:
        cmd = [
            sys.executable, "-m", "vaeserve", "generate", "--target", srv.target,
            "--n", "2000", "--out", str(out), "--seed", "7",
        ]  # fmt: skip
        first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert first.returncode == 0, first.stderr
        summary = json.loads(first.stdout)
        assert summary["written"] == 2000 and summary["seed"] == 7
        assert "generate" in first.stderr  # tqdm's progress bar

        files = sorted(out.glob("[0-9]*.png"))
        assert len(files) == 2000 and files[0].name == "000000.png"
        for path in files[::97]:
            with Image.open(path) as image:
                image.verify()
            with Image.open(path) as image:
                assert image.size == (12, 12) and image.mode == "L"
        with Image.open(out / "contact_sheet.png") as sheet:
            assert sheet.size == (32 * 14 + 2, 32 * 14 + 2)  # first 1024 images, 32 x 32

        # Re-running skips what is there and fetches only what is missing, identically.
        before = (out / "001234.png").read_bytes()
        (out / "001234.png").unlink()
        (out / "000007.png").unlink()
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert again.returncode == 0, again.stderr
        assert (
            json.loads(again.stdout)["written"] == 2 and json.loads(again.stdout)["skipped"] == 1998
        )
        assert (out / "001234.png").read_bytes() == before

        # Another seed into the same folder is refused rather than mixed in.
        clash = subprocess.run(
            [*cmd[:-1], "8"], capture_output=True, text=True, timeout=60, check=False
        )
        assert clash.returncode == 2 and "seed=7" in clash.stderr
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0


def test_require_gpu_without_a_gpu_fails_at_start(tiny_repository, tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None; "
        "from vaeserve.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env_cuda = subprocess.run(
        [sys.executable, "-c", "import onnxruntime as o; print(o.get_device())"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code, "serve", "--repository", str(tiny_repository),
         "--port", "0", "--metrics-port", "0", "--require-gpu", "--host", "127.0.0.1",
         "--port-file", str(tmp_path / "p.json")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode == 0 or (tmp_path / "p.json").exists():
        pytest.skip(f"a working GPU is present ({env_cuda.stdout.strip()})")
    assert result.returncode == 1
    assert "--require-gpu" in result.stderr and "Traceback" not in result.stderr


def test_bad_settings_are_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vaeserve", "serve", "--providers", "tpu", "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "providers" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_images_are_identical_across_processes(tiny_repository, tmp_path):
    """Two replicas, same seed: the same bytes."""
    replies = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        with serve_process(tiny_repository, tmp_path / name) as srv:
            with grpc.insecure_channel(srv.target) as ch:
                stub = vae_pb2_grpc.VaeServiceStub(ch)
                replies.append(stub.Sample(pb.SampleRequest(n=20, seed=99), timeout=30))
            srv.process.send_signal(signal.SIGTERM)
            srv.process.wait(30)
    assert replies[0].images.data == replies[1].images.data
    assert replies[0].latents.data == replies[1].latents.data
    assert np.isfinite(to_array(replies[0].images, "i")).all()
