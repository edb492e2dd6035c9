"""The shipped service config (service/client/service_config.json) retries what it should,
end to end on a real server: a call refused with UNAVAILABLE (too many calls in flight, or
models still loading) is retried by the channel itself and answered OK once the server can
take it; a call over a fixed limit (RESOURCE_EXHAUSTED) is sent once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from vaeserve.service.client.client import VaeClient, service_config
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import ServerThread, running_server
from .reliability import wait_for
from .test_service_rpcs import scrape


def retrying_stub(target: str) -> tuple[grpc.Channel, vae_pb2_grpc.VaeServiceStub]:
    """A plain channel with only the shipped service config: what any language would do."""
    options = [("grpc.service_config", service_config()), ("grpc.enable_retries", 1)]
    channel = grpc.insecure_channel(target, options=options)
    return channel, vae_pb2_grpc.VaeServiceStub(channel)


def count(srv: ServerThread, code: str, method: str) -> float:
    key = f'vaeserve_requests_total{{code="{code}",method="{method}"}}'
    return scrape(srv.metrics_url).get(key, 0)


def test_the_config_retries_unavailable_and_not_wait_for_ready():
    config = json.loads(service_config())
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": "vaeserve.v1.VaeService"}]
    assert method["waitForReady"] is False
    policy = method["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps attempts at 5


@pytest.fixture
def crowded(tiny_repository) -> Iterator[ServerThread]:
    """One call in flight at most; a lone batch waits 5 s for company."""
    with running_server(
        tiny_repository, max_concurrent_requests=1, max_delay_ms=5000.0, batch_wait_when_idle=True
    ) as srv:
        yield srv


def test_too_many_in_flight_is_retried_by_the_channel_until_ok(crowded):
    srv = crowded
    with grpc.insecure_channel(srv.target) as plain:
        held = vae_pb2_grpc.VaeServiceStub(plain).Sample.future(
            pb.SampleRequest(n=1, seed=1), timeout=30
        )
        wait_for(lambda: scrape(srv.metrics_url)["vaeserve_in_flight_requests"] == 1)
        channel, stub = retrying_stub(srv.target)
        with channel:
            call = stub.GetModelInfo.future(pb.GetModelInfoRequest(), timeout=30)
            wait_for(lambda: count(srv, "UNAVAILABLE", "GetModelInfo") >= 1)  # refused once
            held.cancel()  # the slot frees; the channel's next attempt gets in
            assert call.result().name == "tiny"
    assert count(srv, "OK", "GetModelInfo") == 1


def test_loading_is_retried_by_the_channel_until_ok(tiny_repository):
    with running_server(tiny_repository) as srv:
        state = srv.server.state
        srv.loop.call_soon_threadsafe(setattr, state, "ready", False)
        wait_for(lambda: state.ready is False)
        channel, stub = retrying_stub(srv.target)
        with channel:
            call = stub.Sample.future(pb.SampleRequest(n=2, seed=4), timeout=30)
            wait_for(lambda: count(srv, "UNAVAILABLE", "Sample") >= 1)
            srv.loop.call_soon_threadsafe(setattr, state, "ready", True)
            assert call.result().images.shape == [2, 1, 12, 12]
        assert count(srv, "OK", "Sample") == 1


def test_a_fixed_limit_is_not_retried(server):
    before = count(server, "RESOURCE_EXHAUSTED", "Sample")
    channel, stub = retrying_stub(server.target)
    with channel, pytest.raises(grpc.RpcError) as err:
        stub.Sample(pb.SampleRequest(n=10_000), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert count(server, "RESOURCE_EXHAUSTED", "Sample") == before + 1  # one attempt


def test_vae_client_uses_the_service_config(crowded):
    """VaeClient's channel carries the config: a refusal is retried below the client (its own
    retries are off here), and the call succeeds."""
    srv = crowded
    with grpc.insecure_channel(srv.target) as plain:
        held = vae_pb2_grpc.VaeServiceStub(plain).Sample.future(
            pb.SampleRequest(n=1, seed=1), timeout=30
        )
        wait_for(lambda: scrape(srv.metrics_url)["vaeserve_in_flight_requests"] == 1)
        with VaeClient(srv.target, retries=0) as client, ThreadPoolExecutor(1) as pool:
            info = pool.submit(client.model_info)
            wait_for(lambda: count(srv, "UNAVAILABLE", "GetModelInfo") >= 1)
            held.cancel()
            assert info.result(timeout=30).name == "tiny"


def test_vae_client_waits_the_servers_retry_delay(tiny_repository):
    """With the channel's retries off, VaeClient's own retry waits at least RetryInfo's delay
    (LOADING: 1 s), not its 1 ms backoff, so its one retry finds the server ready."""
    with running_server(tiny_repository) as srv:
        state = srv.server.state
        srv.loop.call_soon_threadsafe(setattr, state, "ready", False)
        wait_for(lambda: state.ready is False)
        options = [("grpc.enable_retries", 0)]
        with (
            VaeClient(srv.target, retries=1, backoff_s=0.001, options=options) as client,
            ThreadPoolExecutor(1) as pool,
        ):
            info = pool.submit(client.model_info)
            wait_for(lambda: count(srv, "UNAVAILABLE", "GetModelInfo") >= 1)
            srv.loop.call_soon_threadsafe(setattr, state, "ready", True)
            assert info.result(timeout=30).name == "tiny"
        assert count(srv, "UNAVAILABLE", "GetModelInfo") == 1
