"""Dynamic batching: concurrent requests for one graph are merged, run once, and split back.

Many small callers then get the throughput of big batches. A batch starts when its first piece
has waited `max_delay` or when the waiting pieces fill `max_batch_size`, whichever comes first;
while a batch computes (in a worker thread, so the event loop never blocks), new pieces queue up
and form the next one. Waiting only pays while company is coming, so the batcher expects as many
rows as its previous batch held: it waits until that many are queued (or `max_delay` passes), and
the expectation follows the load up and down. A lone caller on a quiet server therefore gets the
latency of one ONNX Runtime run, and 4 callers do not wait for 256 rows that will never come.
Then, while each turn of the event loop is busy (gRPC is handing over requests it has already
received), the batch takes another turn, up to `max_delay`: waiting costs nothing while the loop
has other work, and an idle turn ends it. Arrivals that leave a batch short wake nothing; the
worker sleeps on one future with at most one timer per batch.
`wait_when_idle` restores the fixed policy (wait for a full batch or the delay, as Triton does).
Pieces whose caller went away (cancelled) or whose deadline passed are dropped before they are
computed. A full queue refuses new pieces at once (`Overloaded`).

Batches are filled fairly between callers, not first come first served: weighted fair queueing
(Demers, Keshav and Shenker 1989) by rows, per request. Each caller is a `Flow` (one request, or
one stream with all its chunks). A request's tag is its finish time in virtual time: it starts at
the later of the batcher's virtual clock and the end of its flow's previous request, and lasts
its rows. Every piece of the request carries that tag, and the smallest tag goes first (ties in
arrival order). The virtual clock advances by each batch's rows divided by the number of flows
waiting, as if every waiting flow were served at the same rate. So a Sample(n=4) is served in the
next batch even behind hundreds of queued pieces of big requests or long streams (its tag is
only 4 rows past the clock); requests of one size run in arrival order, one after another, so
partly computed responses do not pile up in memory; and a stream's next chunk queues behind
the requests that arrived while its last chunk ran. Nothing starves: a tag never changes, and
the clock passes it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from vaeserve.service.errors import DeadlineExpired, Overloaded, Unavailable
from vaeserve.service.metrics import Metrics

log = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray], list[np.ndarray]]
BUSY_TURN_S = 50e-6  # a turn of the event loop that took longer did other work meanwhile


class Flow:
    """One caller, as the batcher's fairness sees it: the pieces of one request, or every chunk
    of one stream, share a Flow. Identity only; the batcher keeps its tags (weakly)."""

    __slots__ = ("__weakref__",)


@dataclass
class _Piece:
    rows: np.ndarray
    future: asyncio.Future[list[np.ndarray]]
    deadline: float | None  # loop.time() after which the caller no longer wants the answer
    enqueued: float  # loop.time() on arrival
    tag: float  # finish tag of its request, in rows of virtual time: the smallest goes first
    flow: Flow


_Entry = tuple[float, int, _Piece]  # (tag, arrival number, piece): heap order


class Batcher:
    """Merges `submit` calls for one graph into runs of at most `max_batch_size` rows."""

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        labels: Sequence[str] = ("model", "0", "graph"),
        metrics: Metrics | None = None,
        wait_when_idle: bool = False,
    ) -> None:
        self._run = run
        self.wait_when_idle = wait_when_idle
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.labels = tuple(labels)
        self.metrics = metrics
        self._queue: list[_Entry] = []  # a heap
        self._arrivals = itertools.count()
        self._vtime = 0.0  # virtual clock, in rows served per waiting flow
        self._finish: weakref.WeakKeyDictionary[Flow, float] = weakref.WeakKeyDictionary()
        self._waiting: dict[Flow, int] = {}  # pieces queued per flow
        self._rows_waiting = 0
        self._wanted = 1  # rows queued at which `submit` wakes the worker
        self._waiter: asyncio.Future[None] | None = None  # what the worker sleeps on
        self._series = metrics.graph(*self.labels) if metrics else None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._retired = False  # no longer served: the worker exits whenever the queue is empty
        self._last_rows = 0  # rows in the previous batch: how much company to expect

    def start(self) -> None:
        if self._series and not self._retired:  # a replacement (same labels) claims the gauge
            me = weakref.ref(self)
            self._series.queue_depth.set_function(lambda: len(b._queue) if (b := me()) else 0)
        self._worker = asyncio.get_running_loop().create_task(
            self._loop(), name=f"batcher-{'/'.join(self.labels)}"
        )

    def retire(self) -> None:
        """A reload replaced this graph: finish what is queued, then let the worker exit. A
        request that resolved the old model before the swap may still submit (a stream's next
        chunk); that restarts the worker, so nothing in flight fails."""
        self._retired = True
        self._wake()

    async def stop(self) -> None:
        """Stop taking work; pieces still queued get Unavailable."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._waiting.clear()
        while self._queue:
            _, _, piece = heapq.heappop(self._queue)
            if not piece.future.done():
                piece.future.set_exception(Unavailable("server is shutting down"))

    def tag(self, flow: Flow, rows: int) -> float:
        """Reserve virtual time for a request of `rows` rows of `flow`: its finish tag."""
        finish = max(self._vtime, self._finish.get(flow, 0.0)) + rows
        self._finish[flow] = finish
        return finish

    async def submit(
        self,
        rows: np.ndarray,
        deadline: float | None = None,
        flow: Flow | None = None,
        tag: float | None = None,
    ) -> list[np.ndarray]:
        """The graph's outputs for `rows` (at most max_batch_size of them), computed in a batch.

        `deadline` is in `loop.time()` seconds. Cancelling the awaiting task drops the piece.
        `flow` is the caller (None: a caller of its own) and `tag` the request's from `tag()`
        (None: a request of these rows alone).
        """
        if len(rows) > self.max_batch_size:
            raise ValueError(f"{len(rows)} rows exceed max_batch_size {self.max_batch_size}")
        if self._closed:
            raise Unavailable("server is shutting down")
        if len(self._queue) >= self.max_queue:
            if self._series:
                self._series.rejected.inc()
            raise Overloaded(
                f"queue full: {len(self._queue)} requests already wait for the "
                f"{self.labels[2]} of {self.labels[0]} v{self.labels[1]}; retry later"
            )
        loop = asyncio.get_running_loop()
        if self._retired and (self._worker is None or self._worker.done()):
            self.start()
        flow = Flow() if flow is None else flow
        tag = self.tag(flow, len(rows)) if tag is None else tag
        piece = _Piece(rows, loop.create_future(), deadline, loop.time(), tag, flow)
        heapq.heappush(self._queue, (tag, next(self._arrivals), piece))
        self._waiting[flow] = self._waiting.get(flow, 0) + 1
        self._rows_waiting += len(rows)
        if self._rows_waiting >= self._wanted:
            self._wake()
        return await piece.future

    @property
    def depth(self) -> int:
        """Pieces waiting."""
        return len(self._queue)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _sleep(self, rows: int, until: float | None) -> None:
        """Until `rows` rows are queued, the loop clock reaches `until`, or `retire`. One future
        and at most one timer per wait: arrivals that do not complete the batch wake nothing."""
        loop = asyncio.get_running_loop()
        self._wanted, self._waiter = rows, loop.create_future()
        timer = None if until is None else loop.call_at(until, self._wake)
        try:
            await self._waiter
        finally:
            self._waiter, self._wanted = None, 1
            if timer is not None:
                timer.cancel()

    async def _gather(self, until: float) -> None:
        """Wait for company while waiting is free: as long as each turn of the event loop is
        busy with other work (gRPC handing over requests it has received, other handlers), the
        batch can grow at no cost to anyone, up to `until`. An idle turn means nothing more is
        on its way: a lone caller pays one turn (microseconds)."""
        loop = asyncio.get_running_loop()
        while self._rows_waiting < self.max_batch_size:
            turn = loop.time()
            await asyncio.sleep(0)
            now = loop.time()
            if now - turn < BUSY_TURN_S or now >= until:
                return

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                if self._retired:
                    return
                await self._sleep(1, None)
            # Wait for company, from the oldest piece's arrival, until the rows expected are
            # queued; then while the event loop is busy handing over more (`_gather`).
            expected = self.max_batch_size
            if not self.wait_when_idle:
                expected = min(expected, self._last_rows)
            if not self._retired:
                until = min(piece.enqueued for _, _, piece in self._queue) + self.max_delay_s
                if self._rows_waiting < expected and loop.time() < until:
                    await self._sleep(expected, until)
                await self._gather(until)
            batch = self._take(loop.time())
            if batch:
                self._last_rows = sum(len(p.rows) for p in batch)
                await self._compute(batch)

    def _take(self, now: float) -> list[_Piece]:
        """Pop pieces in tag order (fair between flows) up to max_batch_size rows, dropping
        dead ones."""
        batch: list[_Piece] = []
        rows, flows = 0, len(self._waiting)
        while self._queue:
            _, _, piece = self._queue[0]
            if piece.future.done():  # cancelled by its caller
                self._drop(piece, "cancelled")
                continue
            if piece.deadline is not None and now >= piece.deadline:
                self._drop(piece, "deadline")
                piece.future.set_exception(DeadlineExpired("deadline passed while queued"))
                continue
            if rows + len(piece.rows) > self.max_batch_size:
                break
            self._pop(piece)
            rows += len(piece.rows)
            batch.append(piece)
        self._vtime += rows / max(1, flows)  # each waiting flow got its share of this batch
        return batch

    def _pop(self, piece: _Piece) -> None:
        """Take the smallest-tag piece (`piece`) off the queue."""
        heapq.heappop(self._queue)
        self._rows_waiting -= len(piece.rows)
        left = self._waiting[piece.flow] - 1
        if left:
            self._waiting[piece.flow] = left
        else:
            del self._waiting[piece.flow]

    def _drop(self, piece: _Piece, reason: str) -> None:
        self._pop(piece)
        if self._series:
            series = self._series
            (series.dropped_cancelled if reason == "cancelled" else series.dropped_deadline).inc()
        log.debug(
            "dropped a %s request piece of %d rows (%s)", self.labels[2], len(piece.rows), reason
        )

    async def _compute(self, batch: list[_Piece]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        inputs = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, inputs)
        except asyncio.CancelledError:
            for piece in batch:
                piece.future.cancel()
            raise
        except Exception as exc:  # the run failed: every caller in the batch hears about it
            log.exception("%s batch of %d rows failed", "/".join(self.labels), len(inputs))
            for piece in batch:
                if not piece.future.done():
                    piece.future.set_exception(exc)
            return
        self._observe(batch, len(inputs), started, loop.time())
        start = 0
        for piece in batch:
            end = start + len(piece.rows)
            if not piece.future.done():
                piece.future.set_result([out[start:end] for out in outputs])
            start = end

    def _observe(self, batch: list[_Piece], rows: int, started: float, ended: float) -> None:
        series = self._series
        if series is None:
            return
        series.batch_size.observe(rows)
        series.batch_requests.observe(len(batch))
        series.inference_time.observe(ended - started)
        for piece in batch:
            series.queue_time.observe(started - piece.enqueued)


async def submit_all(
    batcher: Batcher, rows: np.ndarray, deadline: float | None = None, flow: Flow | None = None
) -> list[np.ndarray]:
    """`submit` for any number of rows: split into max_batch_size pieces (one request of one
    flow), joined back in order."""
    size = batcher.max_batch_size
    flow = Flow() if flow is None else flow
    tag = batcher.tag(flow, len(rows))  # one tag for the whole request: its pieces run together
    if len(rows) <= size:
        return await batcher.submit(rows, deadline, flow, tag)
    tasks = [
        asyncio.ensure_future(batcher.submit(rows[i : i + size], deadline, flow, tag))
        for i in range(0, len(rows), size)
    ]
    try:
        parts = await asyncio.gather(*tasks)
    except BaseException:  # one piece failed or the caller left: the others are not wanted
        for task in tasks:
            task.cancel()
        raise
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
