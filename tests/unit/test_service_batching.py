"""The dynamic batcher with a real numpy "graph" and a real thread pool."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vaeserve.service.batching import Batcher, submit_all
from vaeserve.service.errors import DeadlineExpired, Overloaded, Unavailable
from vaeserve.service.metrics import Metrics


class Graph:
    """Rows -> [2 * rows, row sums]; records every batch; can be held to let requests pile up."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(x.copy())
        return [x * 2, x.sum(axis=1)]


def run(coro_fn, **batcher_kwargs):
    """Run `coro_fn(batcher, graph)` on a fresh event loop with a started batcher."""
    graph = Graph()

    async def main():
        with ThreadPoolExecutor(2) as pool:
            kwargs = {"max_batch_size": 8, "max_delay_s": 0.05, "max_queue": 100}
            batcher = Batcher(graph, pool, **{**kwargs, **batcher_kwargs}, metrics=Metrics())
            batcher.start()
            try:
                return await coro_fn(batcher, graph)
            finally:
                graph.gate.set()
                await batcher.stop()

    return asyncio.run(main()), graph


def rows(i: int, n: int) -> np.ndarray:
    return np.full((n, 3), i, dtype=np.float32) + np.arange(n, dtype=np.float32)[:, None] / 100


def test_concurrent_requests_are_merged_and_split_back():
    sizes = [1, 3, 2, 5, 1, 4, 8, 2, 2, 1]

    async def go(batcher, graph):
        graph.gate.clear()  # hold the first batch so the rest pile up behind it
        first = asyncio.ensure_future(batcher.submit(rows(100, 1)))
        await asyncio.to_thread(graph.entered.wait, 10)
        tasks = [asyncio.ensure_future(batcher.submit(rows(i, n))) for i, n in enumerate(sizes)]
        await asyncio.sleep(0)
        graph.gate.set()
        return await first, await asyncio.gather(*tasks)

    (_, results), graph = run(go)
    for i, (n, (doubled, sums)) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(doubled, rows(i, n) * 2)
        np.testing.assert_allclose(sums, rows(i, n).sum(axis=1))
    batch_sizes = [len(b) for b in graph.batches]
    assert max(batch_sizes) <= 8 and sum(batch_sizes) == 1 + sum(sizes)
    assert len(graph.batches) < 1 + len(sizes)  # requests were merged


def test_requests_are_never_split_across_batches_and_order_is_kept():
    async def go(batcher, graph):
        graph.gate.clear()
        blocker = asyncio.ensure_future(batcher.submit(rows(0, 1)))
        await asyncio.to_thread(graph.entered.wait, 10)
        tasks = [asyncio.ensure_future(batcher.submit(rows(i, 5))) for i in range(1, 4)]
        await asyncio.sleep(0)
        graph.gate.set()
        await blocker
        return await asyncio.gather(*tasks)

    _, graph = run(go)
    # 5 + 5 > 8: each waiting request runs in its own batch, in arrival order.
    assert [len(b) for b in graph.batches] == [1, 5, 5, 5]
    assert [int(b[0, 0]) for b in graph.batches] == [0, 1, 2, 3]


def test_full_queue_is_refused_at_once():
    async def go(batcher, graph):
        graph.gate.clear()
        running = asyncio.ensure_future(batcher.submit(rows(0, 1)))
        await asyncio.to_thread(graph.entered.wait, 10)
        queued = [asyncio.ensure_future(batcher.submit(rows(i, 1))) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue full"):
            await batcher.submit(rows(3, 1))
        graph.gate.set()
        await asyncio.gather(running, *queued)
        return batcher.metrics.rejected.labels(*batcher.labels)._value.get()

    rejected, _ = run(go, max_queue=2)
    assert rejected == 1


def test_cancelled_and_expired_requests_are_dropped_before_compute():
    async def go(batcher, graph):
        loop = asyncio.get_running_loop()
        graph.gate.clear()
        running = asyncio.ensure_future(batcher.submit(rows(0, 1)))
        await asyncio.to_thread(graph.entered.wait, 10)
        cancelled = asyncio.ensure_future(batcher.submit(rows(1, 1)))
        expired = asyncio.ensure_future(batcher.submit(rows(2, 1), deadline=loop.time() - 1))
        kept = asyncio.ensure_future(batcher.submit(rows(3, 1), deadline=loop.time() + 60))
        await asyncio.sleep(0)
        cancelled.cancel()
        graph.gate.set()
        await running
        with pytest.raises(DeadlineExpired):
            await expired
        return await kept

    (doubled, _), graph = run(go)
    np.testing.assert_array_equal(doubled, rows(3, 1) * 2)
    computed = {int(r[0]) for b in graph.batches for r in b}
    assert computed == {0, 3}


def test_submit_all_splits_big_requests_in_order():
    async def go(batcher, graph):
        return await submit_all(batcher, rows(7, 20))

    (doubled, sums), graph = run(go)
    np.testing.assert_array_equal(doubled, rows(7, 20) * 2)
    assert sums.shape == (20,)
    assert all(len(b) <= 8 for b in graph.batches) and sum(map(len, graph.batches)) == 20


def test_a_failing_run_fails_every_request_in_its_batch_and_the_batcher_goes_on():
    def broken(x: np.ndarray) -> list[np.ndarray]:
        if (x < 0).any():
            raise RuntimeError("boom")
        return [x]

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(broken, pool, max_batch_size=8, max_delay_s=0.05, max_queue=10)
            batcher.start()
            bad = [batcher.submit(-rows(1, 1)), batcher.submit(rows(2, 1))]
            results = await asyncio.gather(*bad, return_exceptions=True)
            later = await batcher.submit(rows(3, 1))
            await batcher.stop()
            with pytest.raises(Unavailable):
                await batcher.submit(rows(4, 1))
            return results, later

    results, later = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    np.testing.assert_array_equal(later[0], rows(3, 1))


def test_oversized_piece_is_a_programming_error():
    async def go(batcher, graph):
        with pytest.raises(ValueError, match="max_batch_size"):
            await batcher.submit(rows(0, 9))

    run(go)


def test_a_lone_request_on_a_quiet_batcher_does_not_wait_for_company():
    async def go(batcher, graph):
        loop = asyncio.get_running_loop()
        start = loop.time()
        await batcher.submit(rows(0, 1))
        return loop.time() - start

    elapsed, graph = run(go, max_delay_s=30.0)
    assert elapsed < 15.0  # far below the 30 s delay: it ran at once
    assert [len(b) for b in graph.batches] == [1]


def test_after_a_merged_batch_the_next_request_waits_for_company():
    async def go(batcher, graph):
        graph.gate.clear()
        first = asyncio.ensure_future(batcher.submit(rows(0, 1)))
        await asyncio.to_thread(graph.entered.wait, 10)
        merged = [asyncio.ensure_future(batcher.submit(rows(i, 1))) for i in (1, 2)]
        await asyncio.sleep(0)
        graph.gate.set()
        await asyncio.gather(first, *merged)  # batches [0] then [1, 2]: concurrency seen
        lone = asyncio.ensure_future(batcher.submit(rows(3, 1)))
        await asyncio.sleep(0.05)  # well inside the 30 s delay, so it is still waiting
        late = asyncio.ensure_future(batcher.submit(rows(4, 1)))
        await asyncio.sleep(0)
        return await asyncio.gather(lone, late)

    _, graph = run(go, max_delay_s=30.0, max_batch_size=2)
    assert [len(b) for b in graph.batches] == [1, 2, 2]


def test_the_batcher_expects_as_many_rows_as_its_last_batch_not_a_full_one():
    async def go(batcher, graph):
        graph.gate.clear()
        first = asyncio.ensure_future(batcher.submit(rows(0, 1)))
        await asyncio.to_thread(graph.entered.wait, 10)
        merged = [asyncio.ensure_future(batcher.submit(rows(i, 1))) for i in (1, 2)]
        await asyncio.sleep(0)
        graph.gate.set()
        await asyncio.gather(first, *merged)  # batches [0] then [1, 2]: expect 2 rows next
        lone = asyncio.ensure_future(batcher.submit(rows(3, 1)))
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(batcher.submit(rows(4, 1)))
        # 2 rows are queued: the batch runs now, not after the 30 s delay or at 8 rows
        return await asyncio.wait_for(asyncio.gather(lone, late), 15)

    _, graph = run(go, max_delay_s=30.0, max_batch_size=8)
    assert [len(b) for b in graph.batches] == [1, 2, 2]


def test_a_retired_batcher_leaves_the_queue_depth_gauge_to_its_replacement():
    """After a reload swaps a graph, the old batcher (same labels) drains its queue without
    overwriting the new one's vaeserve_queue_depth."""
    metrics = Metrics()
    labels = ("tiny", "1", "decoder")

    def depth() -> float:
        return metrics.registry.get_sample_value(
            "vaeserve_queue_depth", dict(zip(("model", "version", "graph"), labels, strict=True))
        )

    async def main():
        old_graph, new_graph = Graph(), Graph()
        with ThreadPoolExecutor(2) as pool:
            kwargs = {"max_batch_size": 2, "max_delay_s": 0.0, "max_queue": 100}
            old = Batcher(old_graph, pool, **kwargs, labels=labels, metrics=metrics)
            new = Batcher(new_graph, pool, **kwargs, labels=labels, metrics=metrics)
            old.start()
            old_graph.gate.clear()  # the old batcher is busy with its first piece ...
            pieces = [asyncio.ensure_future(old.submit(rows(i, 2))) for i in range(4)]
            await asyncio.sleep(0.05)
            assert depth() == 3
            new.start()  # ... when the swap happens
            old.retire()
            assert depth() == 0
            new_graph.gate.clear()
            held = [asyncio.ensure_future(new.submit(rows(i, 2))) for i in range(3)]
            await asyncio.sleep(0.05)
            assert depth() == 2  # one computing, two queued
            old_graph.gate.set()  # the old one drains: the new one's gauge stays
            await asyncio.gather(*pieces)
            assert old.depth == 0 and depth() == 2
            new_graph.gate.set()
            await asyncio.gather(*held)
            assert depth() == 0
            await old.stop()
            await new.stop()

    asyncio.run(main())


def test_arrivals_that_do_not_complete_a_batch_start_no_task_or_timer():
    """Waiting for company costs one future and one timer per batch, not per arrival: pieces
    that leave the batch short wake nothing."""

    async def go(batcher, graph):
        graph.gate.clear()
        first = [asyncio.ensure_future(batcher.submit(rows(i, 1))) for i in range(2)]
        await asyncio.to_thread(graph.entered.wait, 10)
        graph.gate.set()
        await asyncio.gather(*first)  # batches [1], [1]? or [2]: either way it expects >= 1
        batcher._last_rows = 8  # expect a full batch: the next pieces wait for company
        loop = asyncio.get_running_loop()
        tasks_before = len(asyncio.all_tasks())
        pieces = []
        for i in range(5):
            pieces.append(asyncio.ensure_future(batcher.submit(rows(i, 1))))
            await asyncio.sleep(0)
        extra_tasks = len(asyncio.all_tasks()) - tasks_before - len(pieces)
        timers = len(loop._scheduled)  # type: ignore[attr-defined]
        more = [asyncio.ensure_future(batcher.submit(rows(i, 1))) for i in range(3)]
        await asyncio.gather(*pieces, *more)
        return extra_tasks, timers

    (extra_tasks, timers), graph = run(go, max_delay_s=30.0)
    assert extra_tasks == 0
    assert timers == 1  # the one delay timer of the batch being formed
    assert [len(b) for b in graph.batches][-1] == 8  # the eighth row completed the batch


def test_while_the_event_loop_is_busy_the_batch_waits_for_the_rows_still_arriving():
    """A caller that runs alone gets its batch at once; requests that reach the batcher one per
    busy turn of the event loop (gRPC handing them over) are merged, though the last batch held
    one row."""

    async def go(batcher, graph):
        await batcher.submit(rows(0, 1))  # a lone caller: batch [1], expect 1 row next

        async def busy_caller(i: int) -> None:
            for _ in range(i):  # arrives at turn i; every turn is busy with the others' work
                time.sleep(0.001)
                await asyncio.sleep(0)
            await batcher.submit(rows(i, 1))

        await asyncio.gather(*(busy_caller(i) for i in range(1, 9)))

    _, graph = run(go, max_delay_s=30.0, max_batch_size=8)
    sizes = [len(b) for b in graph.batches]
    assert sizes[0] == 1 and sum(sizes) == 9
    assert max(sizes[1:]) >= 4  # not one batch per arrival
