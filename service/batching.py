"""Dynamic batching: concurrent requests for one graph are merged, run once, and split back.

Many small callers then get the throughput of big batches. A batch starts when its first piece
has waited `max_delay` or when the waiting pieces fill `max_batch_size`, whichever comes first;
while a batch computes (in a worker thread, so the event loop never blocks), new pieces queue up
and form the next one. Waiting only pays while company is coming, so the batcher expects as many
rows as its previous batch held: it waits until that many are queued (or `max_delay` passes), and
the expectation follows the load up and down. A lone caller on a quiet server therefore gets the
latency of one ONNX Runtime run, and 4 callers do not wait for 256 rows that will never come.
`wait_when_idle` restores the fixed policy (wait for a full batch or the delay, as Triton does).
Pieces whose caller went away (cancelled) or whose deadline passed are dropped before they are
computed. A full queue refuses new pieces at once (`Overloaded`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from vaeserve.service.errors import DeadlineExpired, Overloaded, Unavailable
from vaeserve.service.metrics import Metrics

log = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray], list[np.ndarray]]


@dataclass
class _Piece:
    rows: np.ndarray
    future: asyncio.Future[list[np.ndarray]]
    deadline: float | None  # loop.time() after which the caller no longer wants the answer
    enqueued: float  # loop.time() on arrival


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
        self._queue: deque[_Piece] = deque()
        self._rows_waiting = 0
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._retired = False  # no longer served: the worker exits whenever the queue is empty
        self._last_rows = 0  # rows in the previous batch: how much company to expect

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(
            self._loop(), name=f"batcher-{'/'.join(self.labels)}"
        )

    def retire(self) -> None:
        """A reload replaced this graph: finish what is queued, then let the worker exit. A
        request that resolved the old model before the swap may still submit (a stream's next
        chunk); that restarts the worker, so nothing in flight fails."""
        self._retired = True
        self._arrived.set()
        if self.metrics:  # its replacement has the same labels and owns the gauge from now on
            self.metrics.queue_depth.labels(*self.labels).set(0)

    async def stop(self) -> None:
        """Stop taking work; pieces still queued get Unavailable."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while self._queue:
            piece = self._queue.popleft()
            if not piece.future.done():
                piece.future.set_exception(Unavailable("server is shutting down"))
        self._set_depth()

    async def submit(self, rows: np.ndarray, deadline: float | None = None) -> list[np.ndarray]:
        """The graph's outputs for `rows` (at most max_batch_size of them), computed in a batch.

        `deadline` is in `loop.time()` seconds. Cancelling the awaiting task drops the piece.
        """
        if len(rows) > self.max_batch_size:
            raise ValueError(f"{len(rows)} rows exceed max_batch_size {self.max_batch_size}")
        if self._closed:
            raise Unavailable("server is shutting down")
        if len(self._queue) >= self.max_queue:
            if self.metrics:
                self.metrics.rejected.labels(*self.labels).inc()
            raise Overloaded(
                f"queue full: {len(self._queue)} requests already wait for the "
                f"{self.labels[2]} of {self.labels[0]} v{self.labels[1]}; retry later"
            )
        loop = asyncio.get_running_loop()
        if self._retired and (self._worker is None or self._worker.done()):
            self.start()
        piece = _Piece(rows, loop.create_future(), deadline, loop.time())
        self._queue.append(piece)
        self._rows_waiting += len(rows)
        self._set_depth()
        self._arrived.set()
        return await piece.future

    @property
    def depth(self) -> int:
        """Pieces waiting."""
        return len(self._queue)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                if self._retired:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            # Wait for company, from the first piece's arrival, until the rows expected are queued.
            opened = self._queue[0].enqueued
            expected = self.max_batch_size
            if not self.wait_when_idle:
                expected = min(expected, self._last_rows)
            while self._rows_waiting < expected:
                left = opened + self.max_delay_s - loop.time()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = self._take(loop.time())
            if batch:
                self._last_rows = sum(len(p.rows) for p in batch)
                await self._compute(batch)

    def _take(self, now: float) -> list[_Piece]:
        """Pop pieces in arrival order up to max_batch_size rows, dropping dead ones."""
        batch: list[_Piece] = []
        rows = 0
        while self._queue:
            piece = self._queue[0]
            if piece.future.done():  # cancelled by its caller
                self._drop(piece, "cancelled")
                continue
            if piece.deadline is not None and now >= piece.deadline:
                self._drop(piece, "deadline")
                piece.future.set_exception(DeadlineExpired("deadline passed while queued"))
                continue
            if rows + len(piece.rows) > self.max_batch_size:
                break
            self._queue.popleft()
            self._rows_waiting -= len(piece.rows)
            rows += len(piece.rows)
            batch.append(piece)
        self._set_depth()
        return batch

    def _drop(self, piece: _Piece, reason: str) -> None:
        self._queue.popleft()
        self._rows_waiting -= len(piece.rows)
        if self.metrics:
            self.metrics.dropped.labels(*self.labels, reason).inc()
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
        if not self.metrics:
            return
        m, labels = self.metrics, self.labels
        m.batch_size.labels(*labels).observe(rows)
        m.batch_requests.labels(*labels).observe(len(batch))
        m.inference_time.labels(*labels).observe(ended - started)
        for piece in batch:
            m.queue_time.labels(*labels).observe(started - piece.enqueued)

    def _set_depth(self) -> None:
        if self.metrics and not self._retired:
            self.metrics.queue_depth.labels(*self.labels).set(len(self._queue))


async def submit_all(
    batcher: Batcher, rows: np.ndarray, deadline: float | None = None
) -> list[np.ndarray]:
    """`submit` for any number of rows: split into max_batch_size pieces, joined back in order."""
    size = batcher.max_batch_size
    if len(rows) <= size:
        return await batcher.submit(rows, deadline)
    tasks = [
        asyncio.ensure_future(batcher.submit(rows[i : i + size], deadline))
        for i in range(0, len(rows), size)
    ]
    try:
        parts = await asyncio.gather(*tasks)
    except BaseException:  # one piece failed or the caller left: the others are not wanted
        for task in tasks:
            task.cancel()
        raise
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
