"""VaeClient against a real server: numpy in and out, deadlines, retries on UNAVAILABLE."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import numpy as np
import pytest

from vaeserve.service.client import VaeClient
from vaeserve.service.config import Settings

from .conftest import TEST_SETTINGS, ServerThread


@pytest.fixture(scope="module")
def client(server):
    with VaeClient(server.target, timeout=30) as c:
        yield c


def test_roundtrip_with_numpy(client):
    sample = client.sample(6, seed=5, format="float32")
    assert sample.images.shape == (6, 1, 12, 12) and sample.images.dtype == np.float32
    assert sample.latents.shape == (6, 3) and sample.seed == 5 and sample.png is None
    encoded = client.encode(sample.images, sample=True, seed=3)
    assert encoded.z_mean.shape == encoded.z.shape == (6, 3) and encoded.seed == 3
    again = client.decode(sample.latents)
    np.testing.assert_array_equal(again, sample.images)
    as_uint8 = client.decode(sample.latents, format="uint8")
    assert as_uint8.dtype == np.uint8
    pngs = client.decode(sample.latents, format="png")
    assert len(pngs) == 6 and all(p.startswith(b"\x89PNG") for p in pngs)
    from_uint8 = client.encode(as_uint8)
    assert from_uint8.z is None


def test_stream_in_order_and_equal_to_unary(client):
    chunks = list(client.sample_stream(100, seed=8, format="uint8", chunk_size=30))
    assert [c.offset for c in chunks] == [0, 30, 60, 90]
    streamed = np.concatenate([c.images for c in chunks])
    np.testing.assert_array_equal(streamed, client.sample(100, seed=8, format="uint8").images)


def test_model_info_and_health(client):
    info = client.model_info()
    assert info.name == "tiny" and info.image_shape == (1, 12, 12) and info.latent_dim == 3
    assert info.limits["max_images_per_request"] == 100 and info.metadata["name"] == "tiny"
    assert client.health() == "SERVING" and client.health("") == "SERVING"
    client.wait_ready(timeout=5)


def test_errors_are_rpc_errors_with_the_status(client):
    with pytest.raises(grpc.RpcError) as err:
        client.decode(np.zeros((2, 5), np.float32))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "latent_dim 3" in err.value.details()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_retries_unavailable_until_the_server_is_up(tiny_repository):
    """The first attempts find nothing listening (UNAVAILABLE); the call succeeds once the server
    has started, inside its deadline."""
    port = free_port()
    settings = Settings(repository=tiny_repository, **{**TEST_SETTINGS, "port": port})
    server = ServerThread(settings)
    starter = threading.Timer(0.5, server.start)
    with VaeClient(f"127.0.0.1:{port}", timeout=60, retries=50, max_backoff_s=0.2) as client:
        started = time.monotonic()
        starter.start()
        try:
            reply = client.sample(2, seed=1)
        finally:
            starter.join()
            server.stop()
    assert reply.images.shape == (2, 1, 12, 12)
    assert time.monotonic() - started >= 0.5  # it did have to wait for the server


def test_gives_up_after_the_retries():
    client = VaeClient(f"127.0.0.1:{free_port()}", timeout=10, retries=2, backoff_s=0.01)
    with client, pytest.raises(grpc.RpcError) as err:
        client.model_info()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
